-- Audit targets name their kind (device:<id>, user:<id>, group:<id>, peer:<domain>). Peer
-- changes were recorded under the bare domain before; give those entries the peer: prefix so
-- one filter (target = 'peer:<domain>') finds a peer's whole history.
UPDATE operator_audit SET target = 'peer:' || target
  WHERE action LIKE 'peer.%' AND target NOT LIKE '%:%';
