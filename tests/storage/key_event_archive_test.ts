/**
 * Key-event retention with archive, on PGlite + memory and on Postgres (COMMUCAT_TEST_PG_DSN),
 * against a directory target and a real S3-compatible server (s3rver, started in process on a
 * loopback port): archive then delete, the chain across passes, verify, tampering detected,
 * restore, a device's archived history, failures that delete nothing, an interrupted pass
 * finished by the next one, and one job at a time.
 */
import assert from "node:assert/strict";
import { openScratch } from "../helpers/scratch_storage.ts";
import S3rver from "s3rver";
import { ed25519 } from "@noble/curves/ed25519.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { openPostgres } from "../../storage/db.ts";
import { type Db, type Storage } from "../../storage/mod.ts";
import { PgKeyEventArchiveRepo } from "../../storage/repos/key_event_archive.ts";
import {
  archivedHistory,
  ArchiveIntegrityError,
  archiveKeyEvents,
  type ArchiveOptions,
  MANIFEST_OBJECT,
  readManifest,
  restoreKeyEvents,
  verifyArchive,
} from "../../storage/archive/key_events.ts";
import {
  ArchiveFailure,
  type ArchiveTarget,
  DirTarget,
  S3Target,
} from "../../storage/archive/targets.ts";
import type { KeyEventArchiveRepo } from "../../storage/types.ts";

const dsn = Deno.env.get("COMMUCAT_TEST_PG_DSN") ?? "";
const secretKey = ed25519.utils.randomSecretKey();
const signer = { secretKey, publicKey: ed25519.getPublicKey(secretKey) };
const DAY = 86_400_000;

function key(n: number): Uint8Array {
  return new Uint8Array(32).fill(n);
}

interface Env {
  storage: Storage;
  db: Db;
  /** A second connection pool to the same database (Postgres only). */
  second?: () => Promise<{ repo: KeyEventArchiveRepo; close(): Promise<void> }>;
  close(): Promise<void>;
}

function openPgliteEnv(): Promise<Env> {
  return openScratch("pglite");
}

async function openPgEnv(): Promise<Env> {
  const scratch = await openScratch("postgres");
  return {
    ...scratch,
    async second() {
      const other = await openPostgres(scratch.dsn!, { max: 2 });
      return { repo: new PgKeyEventArchiveRepo(other), close: () => other.close() };
    },
  };
}

async function startS3(): Promise<
  { target: (prefix: string) => S3Target; close(): Promise<void> }
> {
  const dir = await Deno.makeTempDir({ prefix: "commucat-s3rver-" });
  const server = new S3rver({
    port: 0,
    address: "127.0.0.1",
    silent: true,
    directory: dir,
    configureBuckets: [{ name: "commucat-archive", configs: [] }],
  });
  const addr = await server.run();
  return {
    target: (prefix) =>
      new S3Target({
        kind: "s3",
        bucket: "commucat-archive",
        prefix,
        endpoint: `http://127.0.0.1:${addr.port}`,
        region: "us-east-1",
        accessKeyId: "S3RVER",
        secretAccessKey: "S3RVER",
      }),
    async close() {
      await server.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A user with devices `<p>-a`, `<p>-b`, `<p>-c` and key events aged `ages` days (oldest first). */
async function seed(env: Env, p: string): Promise<void> {
  const { storage } = env;
  const user = await storage.users.create({ handle: `${p}-user` });
  for (const [i, d] of ["a", "b", "c"].entries()) {
    await storage.devices.register(
      { id: `${p}-${d}`, userId: user.id, publicKey: key(i + 1), status: "active" },
      "cli:op",
    );
  }
  await storage.devices.rotateKey(`${p}-a`, key(9), "cli:op");
  await storage.devices.rotateKey(`${p}-a`, key(10), "console:s1");
  await storage.devices.revoke(`${p}-b`, "cli:op");
}

/** Ages every event of devices `<p>-*` by `days` days, keeping their order (1 ms apart). */
async function age(env: Env, p: string, days: number): Promise<void> {
  await env.db.query(
    `UPDATE device_key_event e SET recorded_at = now() - make_interval(days => $2)
       + (SELECT count(*) FROM device_key_event o
          WHERE o.device_id LIKE $1 AND (o.recorded_at, o.event_id) < (e.recorded_at, e.event_id))
         * interval '1.001 millisecond'
     WHERE device_id LIKE $1`,
    [`${p}-%`, days],
  );
}

async function count(env: Env, p: string): Promise<number> {
  const res = await env.db.query<{ n: string }>(
    `SELECT count(*) AS n FROM device_key_event WHERE device_id LIKE $1`,
    [`${p}-%`],
  );
  return Number(res.rows[0].n);
}

function options(env: Env, target: ArchiveTarget, extra: Partial<ArchiveOptions> = {}) {
  return {
    repo: env.storage.keyEventArchive,
    target,
    signer,
    domain: "archive.test",
    cutoff: new Date(Date.now() - 365 * DAY),
    chunkEvents: 2,
    ...extra,
  };
}

/** A target wrapper that can be made to fail or lie. */
function faulty(inner: ArchiveTarget, fault: { put?: boolean; corrupt?: boolean }): ArchiveTarget {
  return {
    id: inner.id,
    put(name, bytes, type) {
      if (fault.put) return Promise.reject(new ArchiveFailure("injected: the store is down"));
      return inner.put(name, bytes, type);
    },
    async get(name) {
      const bytes = await inner.get(name);
      if (fault.corrupt && bytes && name.endsWith(".jsonl")) {
        const copy = bytes.slice();
        copy[0] ^= 1;
        return copy;
      }
      return bytes;
    },
    list: (prefix) => inner.list(prefix),
  };
}

async function suite(t: Deno.TestContext, env: Env, target: ArchiveTarget, p: string) {
  await seed(env, p);
  const total = await count(env, p); // a: registered, rotated ×2; b: registered, revoked; c
  assert.equal(total, 6);
  const before = await env.storage.keyEvents.export(`${p}-a`);
  await age(env, p, 400);
  let firstManifest: Uint8Array | null = null;

  await t.step(
    `${p}: a pass archives due events in chained chunks, then deletes them`,
    async () => {
      // Events of other tests' devices may be due too: archive everything, then check ours.
      const r = await archiveKeyEvents(options(env, target));
      assert.ok(r.locked);
      assert.ok(r.archived >= 6);
      assert.equal(r.deleted, r.archived);
      assert.equal(await count(env, p), 0);
      const manifest = await readManifest(target, signer.publicKey);
      assert.ok(manifest);
      assert.equal(manifest.body.chunks.at(-1)!.chain, manifest.body.head);
      firstManifest = await target.get(MANIFEST_OBJECT);
      const again = await archiveKeyEvents(options(env, target));
      assert.ok(again.locked);
      assert.equal(again.chunks, 0);
      const report = await verifyArchive(target, signer.publicKey, env.storage.keyEventArchive);
      assert.deepEqual(report.problems, []);
      assert.ok(report.ok);
      assert.equal(report.events, manifest.body.chunks.reduce((n, c) => n + c.events, 0));
    },
  );

  await t.step(`${p}: recent events stay; a later pass continues the chain`, async () => {
    await env.storage.devices.rotateKey(`${p}-c`, key(20), "cli:op");
    let r = await archiveKeyEvents(options(env, target));
    assert.ok(r.locked && r.archived === 0);
    assert.equal(await count(env, p), 1);
    const chunksBefore = (await readManifest(target, signer.publicKey))!.body.chunks.length;
    await age(env, p, 370);
    r = await archiveKeyEvents(options(env, target));
    assert.ok(r.locked);
    assert.equal(r.archived, 1);
    const manifest = (await readManifest(target, signer.publicKey))!;
    assert.equal(manifest.body.chunks.length, chunksBefore + 1);
    assert.equal(manifest.body.chunks.at(-1)!.prev, manifest.body.chunks.at(-2)!.chain);
    assert.ok((await verifyArchive(target, signer.publicKey, env.storage.keyEventArchive)).ok);
  });

  await t.step(`${p}: a device's archived history comes back exactly`, async () => {
    const h = await archivedHistory(env.storage.keyEventArchive, target, `${p}-a`);
    assert.equal(h.truncated, false);
    assert.deepEqual(
      h.events.map((e) => [e.event_id, e.kind, e.actor, e.public_key]),
      before.map((
        e,
      ) => [
        e.eventId,
        e.kind,
        e.actor,
        bytesToHex(e.publicKey),
      ]),
    );
    assert.match(h.events[0].recorded_at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
    const ranges = await env.storage.keyEventArchive.chunksForDevice(`${p}-a`);
    assert.ok(ranges.length >= 1 && ranges.every((c) => c.target === target.id));
  });

  await t.step(
    `${p}: restore puts events back once; the job deletes them again unarchived`,
    async () => {
      const r = await restoreKeyEvents(env.storage.keyEventArchive, target, signer.publicKey, {
        deviceId: `${p}-a`,
      });
      assert.equal(r.matched, 3);
      assert.equal(r.restored, 3);
      const back = await env.storage.keyEvents.export(`${p}-a`);
      assert.deepEqual(back.map((e) => e.eventId), before.map((e) => e.eventId));
      assert.deepEqual(back.map((e) => e.recordedAt.getTime()).length, 3);
      const twice = await restoreKeyEvents(env.storage.keyEventArchive, target, signer.publicKey, {
        deviceId: `${p}-a`,
      });
      assert.equal(twice.restored, 0);
      assert.equal(twice.present, 3);
      const chunks = (await readManifest(target, signer.publicKey))!.body.chunks.length;
      // Restored rows are old but never archived twice; once their restore is old they go.
      let pass = await archiveKeyEvents(options(env, target));
      assert.ok(pass.locked && pass.archived === 0 && pass.restoredPurged === 0);
      assert.equal(await count(env, p), 3);
      pass = await archiveKeyEvents(
        options(env, target, { restoredCutoff: new Date(Date.now() + 60_000) }),
      );
      assert.ok(pass.locked && pass.archived === 0 && pass.restoredPurged >= 3);
      assert.equal(await count(env, p), 0);
      assert.equal((await readManifest(target, signer.publicKey))!.body.chunks.length, chunks);
    },
  );

  await t.step(`${p}: a failing or lying target deletes nothing`, async () => {
    await env.storage.devices.rotateKey(`${p}-c`, key(21), "cli:op");
    await age(env, p, 380);
    assert.equal(await count(env, p), 1);
    await assert.rejects(
      archiveKeyEvents(options(env, faulty(target, { put: true }))),
      /the store is down/,
    );
    assert.equal(await count(env, p), 1);
    await assert.rejects(
      archiveKeyEvents(options(env, faulty(target, { corrupt: true }))),
      /differs from what was written; nothing was deleted/,
    );
    assert.equal(await count(env, p), 1);
  });

  await t.step(`${p}: a pass stopped after the manifest is finished by the next`, async () => {
    const repo = env.storage.keyEventArchive;
    let failOnce = true;
    const flaky: KeyEventArchiveRepo = {
      withJobLock: (fn) => repo.withJobLock(fn),
      due: (c, l) => repo.due(c, l),
      commitChunk(chunk, ids, devices) {
        if (failOnce) {
          failOnce = false;
          return Promise.reject(new Error("injected: the database went away"));
        }
        return repo.commitChunk(chunk, ids, devices);
      },
      purgeRestored: (c) => repo.purgeRestored(c),
      chunks: (f) => repo.chunks(f),
      chunksForDevice: (d, l) => repo.chunksForDevice(d, l),
      restore: (e) => repo.restore(e),
    };
    await assert.rejects(archiveKeyEvents({ ...options(env, target), repo: flaky }), /went away/);
    assert.equal(await count(env, p), 1, "nothing deleted");
    const r = await archiveKeyEvents(options(env, target));
    assert.ok(r.locked);
    assert.equal(r.reconciled, 1);
    assert.equal(r.archived, 0, "not archived twice");
    assert.equal(await count(env, p), 0);
    assert.ok((await verifyArchive(target, signer.publicKey, repo)).ok);
  });

  await t.step(`${p}: one job at a time`, async () => {
    const repo = env.storage.keyEventArchive;
    const inner = await repo.withJobLock(() => archiveKeyEvents(options(env, target)));
    assert.ok(inner.locked);
    assert.deepEqual(inner.value, { locked: false });
    if (env.second) {
      const other = await env.second();
      try {
        const held = await repo.withJobLock(() =>
          archiveKeyEvents({ ...options(env, target), repo: other.repo })
        );
        assert.ok(held.locked);
        assert.deepEqual(held.value, { locked: false }, "another connection is refused");
        const free = await archiveKeyEvents({ ...options(env, target), repo: other.repo });
        assert.ok(free.locked);
      } finally {
        await other.close();
      }
    }
  });

  await t.step(`${p}: altered, deleted or re-signed archives are detected`, async () => {
    const manifest = (await readManifest(target, signer.publicKey))!;
    const first = manifest.body.chunks[0];
    const original = (await target.get(first.object))!;
    const altered = original.slice();
    altered[10] = altered[10] === 0x41 ? 0x42 : 0x41;
    await target.put(first.object, altered, "application/x-ndjson");
    let report = await verifyArchive(target, signer.publicKey, env.storage.keyEventArchive);
    assert.equal(report.ok, false);
    assert.ok(
      report.problems.some((m) => m.includes(`${first.object} was altered`)),
      report.problems.join("; "),
    );
    await assert.rejects(
      restoreKeyEvents(env.storage.keyEventArchive, target, signer.publicKey),
      ArchiveIntegrityError,
    );
    await target.put(first.object, original, "application/x-ndjson");
    assert.ok((await verifyArchive(target, signer.publicKey, env.storage.keyEventArchive)).ok);

    // A manifest edited by hand (one chunk dropped) no longer verifies, and the job refuses it.
    const manifestBytes = (await target.get(MANIFEST_OBJECT))!;
    const edited = JSON.parse(new TextDecoder().decode(manifestBytes));
    edited.body.chunks[0].events += 1;
    await target.put(
      MANIFEST_OBJECT,
      new TextEncoder().encode(JSON.stringify(edited)),
      "application/json",
    );
    report = await verifyArchive(target, signer.publicKey, env.storage.keyEventArchive);
    assert.ok(report.problems.some((m) => m.includes("signature does not verify")));
    await env.storage.devices.rotateKey(`${p}-c`, key(22), "cli:op");
    await age(env, p, 390);
    await assert.rejects(archiveKeyEvents(options(env, target)), ArchiveIntegrityError);
    assert.equal(await count(env, p), 1, "nothing deleted under a bad manifest");

    // A validly signed but older manifest (rolled back) is caught by the index and the listing.
    const other = ed25519.utils.randomSecretKey();
    await assert.rejects(
      readManifest(target, ed25519.getPublicKey(other)),
      /not by this server's federation key|signature/,
    );
    await target.put(MANIFEST_OBJECT, firstManifest!, "application/json");
    report = await verifyArchive(target, signer.publicKey, env.storage.keyEventArchive);
    assert.equal(report.ok, false);
    assert.ok(
      report.problems.some((m) => m.includes("not in the manifest")),
      report.problems.join("; "),
    );
    assert.ok(report.problems.some((m) => m.includes("the manifest does not list it")));
    await target.put(MANIFEST_OBJECT, manifestBytes, "application/json");
    assert.ok((await verifyArchive(target, signer.publicKey, env.storage.keyEventArchive)).ok);
  });
}

async function withTargets(t: Deno.TestContext, env: Env) {
  const dir = await Deno.makeTempDir({ prefix: "commucat-archive-dir-" });
  const s3 = await startS3();
  try {
    await suite(t, env, new DirTarget(dir), "dir");
    await suite(t, env, s3.target("relay/"), "s3");
  } finally {
    await s3.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "key-event archive: pglite + memory, directory and S3 targets",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const env = await openPgliteEnv();
    try {
      await withTargets(t, env);
    } finally {
      await env.close();
    }
  },
});

Deno.test({
  name: "key-event archive: postgres, directory and S3 targets",
  ignore: dsn === "",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const env = await openPgEnv();
    try {
      await withTargets(t, env);
    } finally {
      await env.close();
    }
  },
});

Deno.test("an unreachable S3 endpoint is an ArchiveFailure naming the target", async () => {
  const target = new S3Target({
    kind: "s3",
    bucket: "b",
    prefix: "",
    endpoint: "http://127.0.0.1:9",
    region: "us-east-1",
    accessKeyId: "x",
    secretAccessKey: "y",
  });
  await assert.rejects(target.get("key-events/manifest.json"), (err) => {
    assert.ok(err instanceof ArchiveFailure);
    assert.match(err.message, /s3:\/\/b\/@http:\/\/127\.0\.0\.1:9/);
    assert.doesNotMatch(err.message, /\by\b/);
    return true;
  });
});

Deno.test("object names cannot leave the target", async () => {
  const target = new DirTarget(await Deno.makeTempDir());
  for (const bad of ["../x", "a/../../b", "/abs", "a//b", "a b"]) {
    await assert.rejects(target.get(bad), ArchiveFailure, bad);
  }
});
