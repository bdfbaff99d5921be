/** Db-level behaviour that needs no database: DSN redaction, connection failures, cursors. */
import assert from "node:assert/strict";
import { openPostgres, redactDsn } from "../../storage/db.ts";
import { InvalidValue, StorageFailure } from "../../storage/errors.ts";
import { decodeCursor, encodeCursor, pageLimit } from "../../storage/pagination.ts";

Deno.test("redactDsn drops the password and the query string", () => {
  assert.equal(
    redactDsn("postgres://app:hunter2@db.example:5432/commucat?sslmode=require"),
    "postgres://app@db.example:5432/commucat",
  );
  assert.equal(redactDsn("not a url"), "(unparseable postgres DSN)");
});

Deno.test("an unreachable Postgres is a StorageFailure that never shows the password", async () => {
  await assert.rejects(openPostgres("postgres://app:hunter2@127.0.0.1:1/commucat"), (err) => {
    assert.ok(err instanceof StorageFailure);
    assert.equal(err.title, "Storage Failure");
    assert.match(err.message, /cannot connect to postgres at postgres:\/\/app@127\.0\.0\.1:1/);
    assert.ok(!err.message.includes("hunter2"), err.message);
    return true;
  });
  await assert.rejects(openPostgres("mysql:/nope"), StorageFailure);
});

Deno.test("cursors round-trip and refuse anything forged", () => {
  const c = encodeCursor(["1732630000000000", "dev-1"]);
  assert.match(c, /^[A-Za-z0-9_-]+$/);
  assert.deepEqual(decodeCursor(c, ["int", "text"]), ["1732630000000000", "dev-1"]);
  assert.equal(decodeCursor(null, ["int"]), null);
  assert.equal(decodeCursor(undefined, ["int"]), null);
  for (const bad of ["!!", encodeCursor(["x"]), encodeCursor(["a", "b"]), btoa("[1,2]")]) {
    assert.throws(() => decodeCursor(bad, ["int", "text"]), InvalidValue);
  }
  assert.equal(pageLimit(undefined), 50);
  assert.equal(pageLimit(500), 500);
  assert.throws(() => pageLimit(0), /invalid limit 0/);
});
