import assert from "node:assert/strict";
import { join } from "node:path";
import { blake3 } from "@noble/hashes/blake3.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import {
  canonicalJson,
  createLedger,
  ledgerDigest,
  LedgerError,
  type LedgerRecord,
} from "../../storage/ledger.ts";
import type { LogFields, Logger } from "../../server/log.ts";

const FIXED = new Date("2025-03-04T05:06:07.089Z");

/** A logger that keeps what it is given. */
function memoryLogger(): Logger & { lines: [string, string, LogFields][] } {
  const lines: [string, string, LogFields][] = [];
  const make = (bound: LogFields): Logger => ({
    debug: (msg, f) => lines.push(["debug", msg, { ...bound, ...f }]),
    info: (msg, f) => lines.push(["info", msg, { ...bound, ...f }]),
    warn: (msg, f) => lines.push(["warn", msg, { ...bound, ...f }]),
    error: (msg, f) => lines.push(["error", msg, { ...bound, ...f }]),
    child: (f) => make({ ...bound, ...f }),
  });
  return Object.assign(make({}), { lines });
}

async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "commucat_ledger_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("canonical JSON sorts keys at every level and drops undefined members", () => {
  assert.equal(
    canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: "x" }, u: undefined }),
    '{"a":{"c":"x","d":[3,{"y":2,"z":1}]},"b":1}',
  );
});

Deno.test("a record's digest is BLAKE3 over the canonical JSON of kind, metadata, time", async () => {
  const ledger = createLedger({ mode: "null", target: null, now: () => FIXED });
  const record = await ledger.record("device_key_event", {
    device_id: "dev-1",
    public_key: new Uint8Array([0xde, 0xad, 0xbe, 0xef]),
    at: new Date(0),
    count: 2n,
    skip: undefined,
  });
  await ledger.close();
  assert.equal(record.recorded_at, "2025-03-04T05:06:07.089Z");
  assert.equal(record.kind, "device_key_event");
  assert.deepEqual(record.metadata, {
    device_id: "dev-1",
    public_key: "deadbeef",
    at: "1970-01-01T00:00:00.000Z",
    count: "2",
  });
  const canonical = '{"kind":"device_key_event","metadata":{"at":"1970-01-01T00:00:00.000Z",' +
    '"count":"2","device_id":"dev-1","public_key":"deadbeef"},' +
    '"recorded_at":"2025-03-04T05:06:07.089Z"}';
  assert.equal(record.digest, bytesToHex(blake3(new TextEncoder().encode(canonical))));
  assert.equal(record.digest, ledgerDigest(record.kind, record.metadata, record.recorded_at));
  assert.match(record.digest, /^[0-9a-f]{64}$/);
});

Deno.test("different content gives a different digest", async () => {
  const ledger = createLedger({ mode: "null", target: null, now: () => FIXED });
  const a = await ledger.record("session", { device_id: "a" });
  const b = await ledger.record("session", { device_id: "b" });
  const c = await ledger.record("session_end", { device_id: "a" });
  await ledger.close();
  assert.equal(new Set([a.digest, b.digest, c.digest]).size, 3);
});

Deno.test("debug mode writes each record to the log", async () => {
  const logger = memoryLogger();
  const ledger = createLedger({ mode: "debug", target: null, now: () => FIXED }, logger);
  const record = await ledger.record("session", { device_id: "d1" });
  await ledger.close();
  assert.equal(logger.lines.length, 1);
  const [level, msg, fields] = logger.lines[0];
  assert.equal(level, "info");
  assert.equal(msg, "ledger record");
  assert.equal(fields.component, "ledger");
  assert.equal(fields.digest, record.digest);
  assert.equal(fields.kind, "session");
  assert.deepEqual(fields.metadata, { device_id: "d1" });
});

Deno.test("file mode appends one JSON line per record, mode 0600, parents created", async () => {
  await inTempDir(async (dir) => {
    const target = join(dir, "audit", "ledger.jsonl");
    const ledger = createLedger({ mode: "file", target });
    await ledger.ready();
    assert.equal((await Deno.stat(target)).mode! & 0o777, 0o600);
    const first = await ledger.record("session", { device_id: "d1", key: new Uint8Array([1]) });
    const second = await ledger.record("device_key_event", { device_id: "d1" });
    await ledger.close();

    // Reopening appends rather than truncating.
    const again = createLedger({ mode: "file", target });
    const third = await again.record("session", { device_id: "d2" });
    await again.close();

    const lines = (await Deno.readTextFile(target)).split("\n");
    assert.equal(lines.pop(), "", "file ends with a newline");
    const parsed = lines.map((l) => JSON.parse(l) as LedgerRecord);
    assert.deepEqual(parsed, [first, second, third]);
    assert.deepEqual(Object.keys(parsed[0]), ["digest", "recorded_at", "kind", "metadata"]);
    assert.equal(parsed[0].metadata.key, "01");
    for (const line of parsed) {
      assert.equal(line.digest, ledgerDigest(line.kind, line.metadata, line.recorded_at));
    }
  });
});

Deno.test("concurrent records are written whole, one per line, in call order", async () => {
  await inTempDir(async (dir) => {
    const target = join(dir, "ledger.jsonl");
    const ledger = createLedger({ mode: "file", target });
    const big = "x".repeat(64 * 1024);
    const records = await Promise.all(
      Array.from({ length: 200 }, (_, i) => ledger.record("session", { i, big })),
    );
    await ledger.close();
    const lines = (await Deno.readTextFile(target)).trimEnd().split("\n");
    assert.equal(lines.length, 200);
    lines.forEach((line, i) => {
      const parsed = JSON.parse(line) as LedgerRecord;
      assert.equal(parsed.metadata.i, i);
      assert.equal(parsed.digest, records[i].digest);
    });
  });
});

Deno.test("file mode without a target is refused clearly", () => {
  for (const target of [null, "", "   "]) {
    assert.throws(
      () => createLedger({ mode: "file", target }),
      (err: unknown) =>
        err instanceof LedgerError && /needs a target path/.test(err.message) &&
        /COMMUCAT_LEDGER_TARGET/.test(err.message),
    );
  }
  assert.throws(
    () => createLedger({ mode: "syslog" as never, target: null }),
    /unknown ledger mode "syslog"/,
  );
});

Deno.test("debug mode without a logger is refused clearly", () => {
  assert.throws(
    () => createLedger({ mode: "debug", target: null }),
    (err: unknown) => err instanceof LedgerError && /needs a logger/.test(err.message),
  );
});

Deno.test("an unwritable target fails with a LedgerError naming the file", async () => {
  await inTempDir(async (dir) => {
    const blocker = join(dir, "not-a-dir");
    await Deno.writeTextFile(blocker, "");
    const target = join(blocker, "ledger.jsonl");
    const ledger = createLedger({ mode: "file", target });
    await assert.rejects(ledger.ready(), (err: unknown) => {
      return err instanceof LedgerError && err.message.includes(target);
    });
    await assert.rejects(ledger.record("session", {}), LedgerError);
    await ledger.close();
  });
});

Deno.test("bad records are refused without writing anything", async () => {
  await inTempDir(async (dir) => {
    const target = join(dir, "ledger.jsonl");
    const ledger = createLedger({ mode: "file", target });
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    await assert.rejects(ledger.record("", {}), /kind must be a non-empty string/);
    await assert.rejects(ledger.record("k", { n: Infinity }), /metadata\.n is Infinity/);
    await assert.rejects(ledger.record("k", cyclic), /metadata\.self refers to itself/);
    await assert.rejects(ledger.record("k", null as never), /metadata must be an object/);
    const ok = await ledger.record("k", { fine: true });
    await ledger.close();
    await assert.rejects(ledger.record("k", {}), /ledger is closed/);
    const lines = (await Deno.readTextFile(target)).trimEnd().split("\n");
    assert.deepEqual(lines.map((l) => JSON.parse(l).digest), [ok.digest]);
  });
});

Deno.test("null mode keeps nothing but still returns the record", async () => {
  const ledger = createLedger({ mode: "null", target: "/nonexistent/ignored" });
  const record = await ledger.record("session", { a: 1 });
  assert.match(record.digest, /^[0-9a-f]{64}$/);
  await ledger.close();
  await assert.rejects(ledger.record("session", {}), /ledger is closed/);
});
