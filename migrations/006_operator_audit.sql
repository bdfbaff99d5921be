-- The operator audit log: who did what to which target, with the state before and after.

CREATE TABLE operator_audit (
  id          bigserial PRIMARY KEY,
  actor       text NOT NULL,
  action      text NOT NULL,
  target      text NOT NULL,
  before      jsonb,
  after       jsonb,
  recorded_at timestamptz NOT NULL DEFAULT now()
);

-- The console lists newest first (by id), optionally filtered by actor, action or target.
CREATE INDEX operator_audit_recorded_idx ON operator_audit (recorded_at DESC);
CREATE INDEX operator_audit_actor_idx ON operator_audit (actor, id DESC);
CREATE INDEX operator_audit_action_idx ON operator_audit (action, id DESC);
CREATE INDEX operator_audit_target_idx ON operator_audit (target, id DESC);
