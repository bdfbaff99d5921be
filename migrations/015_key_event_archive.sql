-- Key-event retention with archive. Old device_key_event rows are moved to an archive target
-- (a directory or an S3-compatible bucket) as hash-chained JSON Lines chunks under a signed
-- manifest, then deleted here. This index says which chunk went where, with its hashes, and
-- which devices each chunk holds, so a device's archived history is found without reading
-- every chunk. Events brought back by a restore carry restored_at: the retention job deletes
-- them again later without archiving them a second time.

CREATE TABLE key_event_archive_chunk (
  target      text NOT NULL,
  seq         bigint NOT NULL CHECK (seq >= 1),
  object      text NOT NULL,
  first_at    text NOT NULL,
  last_at     text NOT NULL,
  events      integer NOT NULL CHECK (events >= 1),
  sha256      text NOT NULL,
  chain       text NOT NULL,
  archived_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (target, seq)
);

CREATE TABLE key_event_archive_device (
  device_id text NOT NULL,
  target    text NOT NULL,
  seq       bigint NOT NULL,
  events    integer NOT NULL,
  PRIMARY KEY (device_id, target, seq),
  FOREIGN KEY (target, seq) REFERENCES key_event_archive_chunk (target, seq) ON DELETE CASCADE
);

ALTER TABLE device_key_event ADD COLUMN restored_at timestamptz;
CREATE INDEX device_key_event_restored_idx ON device_key_event (restored_at)
  WHERE restored_at IS NOT NULL;
