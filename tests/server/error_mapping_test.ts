/**
 * One error model: every layer's error is a ProblemError (title, status, detail, fatal, cause);
 * toProblem turns any error into an RFC 9457 problem; refusalFor turns a storage error into
 * the protocol refusal the relay sends; problemResponse answers one over HTTP.
 */
import assert from "node:assert/strict";
import {
  CodecError,
  INTERNAL_PROBLEM,
  ProblemError,
  problemResponse,
  ProtocolError,
  toProblem,
} from "../../protocol/errors.ts";
import {
  Conflict,
  InvalidValue,
  NotFound,
  RedisFailure,
  StorageError,
  StorageFailure,
  TransitionNotAllowed,
} from "../../storage/errors.ts";
import { DbFailure } from "../../storage/db.ts";
import { refusalFor } from "../../server/errors.ts";
import { ConfigError } from "../../server/config/mod.ts";
import { PageError } from "../../console/middleware/errors.tsx";
import { ConsoleConfigError } from "../../console/auth.ts";
import { DecryptError, InvalidKeyError } from "../../protocol/crypto.ts";
import { NoiseError } from "../../protocol/noise.ts";
import { FederationError } from "../../protocol/federation.ts";
import { EnvelopeError } from "../../protocol/envelope.ts";
import { EventShapeError } from "../../server/federation/event.ts";
import { FederationRefused } from "../../server/federation/errors.ts";
import { ReplayGuardFull } from "../../server/federation/replay.ts";
import { LedgerError } from "../../storage/ledger.ts";
import { CliFailure } from "../../cli/context.ts";
import { UsageError } from "../../cli/args.ts";
import { KeystoreError } from "../../client/keystore.ts";
import { CommuCatError } from "../../client/errors.ts";
import { E2EError } from "../../client/e2e.ts";

const TITLE_CASE = /^[A-Z][A-Za-z0-9]*(?: [A-Z][A-Za-z0-9]*)*$/;

Deno.test("errors: every layer's error is a ProblemError with a Title Case title", () => {
  const cause = new Error("underneath");
  const all: [ProblemError, number, boolean][] = [
    [new ProtocolError("Not Permitted", 403, "no"), 403, true],
    [new CodecError("Truncated Frame", "short"), 400, true],
    [new StorageFailure("db down", { cause }), 503, false],
    [new RedisFailure("redis down"), 503, false],
    [new DbFailure("db down", "08006", undefined), 503, false],
    [new NotFound("device", "bob"), 404, false],
    [new InvalidValue("device id", ".bob", "an id"), 400, false],
    [new TransitionNotAllowed("peer", "blocked", "active"), 409, false],
    [new Conflict("taken"), 409, false],
    [new ConfigError(["a", "b"]), 500, true],
    [new ConsoleConfigError("no token"), 500, true],
    [new PageError(404, "Not Found", "no such page"), 404, false],
    [new NoiseError("decrypt", "bad tag"), 400, true],
    [new DecryptError(), 400, true],
    [new InvalidKeyError("low order"), 400, false],
    [new FederationError("bad time"), 400, false],
    [new EnvelopeError("bad-key", "off the curve"), 400, false],
    [new EventShapeError("event.origin", "missing"), 400, false],
    [new ReplayGuardFull(3), 503, false],
    [new LedgerError("cannot write", { cause }), 503, false],
    [new CliFailure("nothing to do"), 400, true],
    [new UsageError("bad flag", "usage"), 400, true],
    [new KeystoreError("bad file"), 400, true],
    [new CommuCatError("Connection Closed", 503, "gone"), 503, true],
    [new E2EError("unknown-key", "no key for bob", { device: "bob" }), 400, false],
  ];
  for (const [err, status, fatal] of all) {
    assert.ok(err instanceof ProblemError, err.name);
    assert.ok(err instanceof Error);
    assert.match(err.title, TITLE_CASE, `${err.name}: ${err.title}`);
    assert.equal(err.status, status, err.name);
    assert.equal(err.fatal, fatal, err.name);
    assert.ok(err.detail.length > 0, err.name);
    assert.equal(err.name, err.constructor.name);
  }
  // Federation's titles are the wire's (ccp1.md §7: "federation peer not allowed"), kept as is.
  const refused = new FederationRefused("federation peer not allowed", 403, "blocked");
  assert.ok(refused instanceof ProblemError && refused instanceof ProtocolError);
  assert.equal(refused.fatal, false);
  // Messages stay what operators read: the detail (ProtocolError adds its title).
  assert.equal(new NotFound("device", "bob").message, 'device "bob" not found');
  assert.equal(new NotFound("device", "bob").detail, 'device "bob" not found');
  assert.equal(new ProtocolError("Not Permitted", 403, "no").message, "Not Permitted: no");
  assert.equal(new EventShapeError("event.origin", "missing").message, "event.origin: missing");
  assert.equal(new StorageFailure("db down", { cause }).cause, cause);
});

Deno.test("errors: toProblem gives a ProblemError's fields and hides anything else", () => {
  assert.deepEqual(toProblem(new NotFound("device", "bob"), 7), {
    type: "about:blank",
    title: "Not Found",
    status: 404,
    detail: 'device "bob" not found',
    fatal: false,
    sequence: 7,
  });
  const hidden = toProblem(new Error("password=hunter2 at db.internal"));
  assert.deepEqual(hidden, INTERNAL_PROBLEM);
  assert.ok(!JSON.stringify(hidden).includes("hunter2"));
  assert.deepEqual(toProblem("a string"), INTERNAL_PROBLEM);
});

Deno.test("errors: refusalFor maps a storage error to the protocol refusal, once", () => {
  const stored = new NotFound("group", "g1");
  const soft = refusalFor(stored, { fatal: false });
  assert.ok(soft instanceof ProtocolError);
  assert.deepEqual(soft.toProblem(3), {
    type: "about:blank",
    title: "Not Found",
    status: 404,
    detail: 'group "g1" not found',
    fatal: false,
    sequence: 3,
  });
  assert.equal(soft.cause, stored);
  const hard = refusalFor(new StorageFailure("db down"), { fatal: true });
  assert.equal(hard?.fatal, true);
  assert.equal(hard?.title, "Storage Failure");
  assert.equal(hard?.status, 503);
  const framed = refusalFor(new RedisFailure("redis down"), {
    fatal: false,
    context: "frame not delivered",
  });
  assert.equal(framed?.detail, "frame not delivered: redis down");
  // Already a refusal, or not a problem at all: the caller's to report.
  assert.equal(refusalFor(new ProtocolError("Not Permitted", 403, "no"), { fatal: false }), null);
  assert.equal(refusalFor(new Error("bug"), { fatal: true }), null);
  assert.equal(refusalFor(undefined, { fatal: true }), null);
  assert.ok(new InvalidValue("x", 1, "y") instanceof StorageError);
});

Deno.test("errors: problemResponse is RFC 9457 JSON with extra members and headers", async () => {
  const res = problemResponse(405, "Method Not Allowed", "use POST", { field: "method" }, {
    allow: "POST",
  });
  assert.equal(res.status, 405);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  assert.equal(res.headers.get("allow"), "POST");
  assert.deepEqual(await res.json(), {
    type: "about:blank",
    title: "Method Not Allowed",
    status: 405,
    detail: "use POST",
    field: "method",
  });
});
