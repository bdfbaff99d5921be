-- The sender of each queued frame (ccp1.md §4.2): the device the server authenticated, or
-- device@domain for a federated one. Replayed frames carry it to recipients that asked for the
-- sender capability. Rows queued before this column existed have no sender (NULL).

ALTER TABLE relay_queue ADD COLUMN sender text;
