/**
 * The storage contract suite: one set of behaviours every backend must show. Each backend file
 * (contract_pg_test.ts, contract_pglite_test.ts) calls `registerContract` with a factory; the
 * database is opened once per file and every case runs as a step against it, using ids unique to
 * the run so cases never see each other's rows.
 */
import assert from "node:assert/strict";
import type { Db } from "../../storage/db.ts";
import {
  Conflict,
  InvalidValue,
  migrate,
  MIGRATIONS_DIR,
  migrationStatus,
  nonconformingIds,
  NotFound,
  type Storage,
  StorageError,
  StorageFailure,
  TransitionNotAllowed,
} from "../../storage/mod.ts";
import { encodeCursor } from "../../storage/pagination.ts";

export interface Opened {
  storage: Storage;
  db: Db;
  close(): Promise<void>;
}

export interface Backend {
  name: string;
  /** Registered but skipped (visible in the summary) when the backend is not available. */
  ignore: boolean;
  open(): Promise<Opened>;
  /** Extra backend-specific steps. */
  extra?: (t: Deno.TestContext, o: Opened) => Promise<void>;
  /**
   * Only the cases of these areas (a hand-written fake names the repositories it implements);
   * absent: every case.
   */
  areas?: readonly string[];
  /**
   * Cases of those areas this backend cannot run, each with the reason (a case that installs
   * a SQL trigger, say); they are reported as ignored steps, the reason in the name.
   */
  without?: Readonly<Record<string, string>>;
}

/** The static [federation] peer every backend is opened with. */
export const STATIC_PEER = {
  domain: "static.example.org",
  endpoint: "https://static.example.org/federation",
  publicKey: new Uint8Array(32).fill(0xee),
};

export function key(n: number): Uint8Array {
  return new Uint8Array(32).fill(n);
}

const HOSTILE = [
  "'; DROP TABLE app_user; --",
  "<script>alert(1)</script>",
  "Robert'); DROP TABLE user_device; --",
  '" OR 1=1 --',
  "Ünïcødé 🐈 кот 猫 \u202e",
  "back\\slash %_ wild",
];

type Case = [string, (s: Storage, db: Db, u: string) => Promise<void>];

function isA(cls: abstract new (...args: never[]) => Error, text?: string) {
  return (err: unknown) => {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${err}`);
    if (text !== undefined) {
      assert.ok((err as Error).message.includes(text), `"${(err as Error).message}" names ${text}`);
    }
    return true;
  };
}

async function allPages<T>(
  fetch: (cursor: string | null) => Promise<{ items: T[]; nextCursor: string | null }>,
): Promise<{ items: T[]; pages: number }> {
  const items: T[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const page = await fetch(cursor);
    items.push(...page.items);
    cursor = page.nextCursor;
    pages++;
    assert.ok(pages < 100, "pagination terminates");
  } while (cursor);
  return { items, pages };
}

/** A user and an active device, for cases that need one. */
async function device(s: Storage, u: string, name: string, n = 1) {
  const user = await s.users.create({ handle: `${u}-${name}` });
  const { device } = await s.devices.register(
    { id: `${u}-${name}`, userId: user.id, publicKey: key(n), status: "active" },
    "test",
  );
  return { user, device };
}

const cases: Case[] = [
  ["users: create, get, update, refuse duplicates and bad values", async (s, _db, u) => {
    const alice = await s.users.create({
      handle: `${u}-alice`,
      displayName: "Alice",
      avatarUrl: "https://a.example/a.png",
    });
    assert.equal(alice.handle, `${u}-alice`);
    assert.equal(alice.displayName, "Alice");
    assert.ok(alice.createdAt instanceof Date);
    assert.deepEqual(await s.users.get(alice.id), alice);
    assert.deepEqual(await s.users.getByHandle(`${u}-alice`), alice);
    assert.equal(await s.users.get(`${u}-nobody`), null);
    assert.equal(await s.users.getByHandle(`${u}-nobody`), null);
    const withId = await s.users.create({ handle: `${u}-bob`, id: `${u}-bob-id` });
    assert.equal(withId.id, `${u}-bob-id`);

    const renamed = await s.users.update(alice.id, { displayName: "Alice B." });
    assert.equal(renamed.displayName, "Alice B.");
    assert.equal(renamed.avatarUrl, "https://a.example/a.png", "undefined leaves a field alone");
    const cleared = await s.users.update(alice.id, { avatarUrl: null });
    assert.equal(cleared.avatarUrl, null);
    assert.equal(cleared.displayName, "Alice B.");
    assert.ok(cleared.updatedAt >= alice.updatedAt);

    await assert.rejects(s.users.create({ handle: `${u}-alice` }), isA(Conflict, `${u}-alice`));
    await assert.rejects(
      s.users.create({ handle: `${u}-x`, id: `${u}-bob-id` }),
      isA(Conflict, `${u}-bob-id`),
    );
    await assert.rejects(s.users.create({ handle: "has space" }), isA(InvalidValue, "has space"));
    await assert.rejects(s.users.create({ handle: "" }), isA(InvalidValue, "handle"));
    await assert.rejects(s.users.create({ handle: "x".repeat(65) }), isA(InvalidValue, "handle"));
    await assert.rejects(
      s.users.create({ handle: `${u}-n`, displayName: "a\u0000b" }),
      isA(InvalidValue, "display name"),
    );
    await assert.rejects(s.users.update(`${u}-ghost`, { displayName: "x" }), isA(NotFound));
    const cyr = await s.users.create({ handle: `Алиса-${u}` });
    assert.equal((await s.users.getByHandle(`Алиса-${u}`))?.id, cyr.id);
  }],

  ["users: list by handle prefix, paginated", async (s, _db, u) => {
    for (let i = 0; i < 7; i++) await s.users.create({ handle: `${u}-page-${i}` });
    await s.users.create({ handle: `${u}-other` });
    const { items, pages } = await allPages((cursor) =>
      s.users.list({ search: `${u.toUpperCase()}-PAGE`, limit: 3, cursor })
    );
    assert.equal(pages, 3);
    assert.deepEqual(
      items.map((x) => x.handle),
      [0, 1, 2, 3, 4, 5, 6].map((i) => `${u}-page-${i}`),
    );
    assert.equal((await s.users.list({ search: `${u}-page-%` })).items.length, 0, "% is literal");
    assert.equal((await s.users.list({ search: `${u}_page` })).items.length, 0, "_ is literal");
  }],

  [
    "devices: register, approve, reject, revoke, rotate — each with its key event",
    async (s, _db, u) => {
      const user = await s.users.create({ handle: `${u}-dev` });
      const a = await s.devices.register(
        { id: `${u}-a`, userId: user.id, publicKey: key(1), status: "active" },
        "cli:op",
      );
      assert.equal(a.device.status, "active");
      assert.equal(a.event.kind, "registered");
      assert.equal(a.event.actor, "cli:op");
      assert.deepEqual(a.event.publicKey, key(1));
      assert.equal(a.device.publicKey.constructor, Uint8Array, "bytea is a plain Uint8Array");

      const p = await s.devices.register(
        { id: `${u}-p`, userId: user.id, publicKey: key(2), status: "pending" },
        "cli:op",
      );
      assert.equal(p.device.status, "pending");
      assert.equal(p.event.kind, "pending");
      const ap = await s.devices.approve(`${u}-p`, "console:s1");
      assert.equal(ap.device.status, "active");
      assert.equal(ap.event.kind, "approved");
      assert.equal(ap.event.actor, "console:s1");
      await assert.rejects(s.devices.approve(`${u}-p`, "x"), isA(TransitionNotAllowed, "active"));

      const r = await s.devices.register(
        { id: `${u}-r`, userId: user.id, publicKey: key(3), status: "pending" },
        "cli:op",
      );
      assert.equal(r.device.status, "pending");
      const rej = await s.devices.reject(`${u}-r`, "cli:op");
      assert.equal(rej.device.status, "revoked");
      assert.equal(rej.event.kind, "rejected");
      await assert.rejects(s.devices.reject(`${u}-r`, "x"), isA(TransitionNotAllowed, "revoked"));

      const rot = await s.devices.rotateKey(`${u}-a`, key(9), "cli:op");
      assert.deepEqual(rot.device.publicKey, key(9));
      assert.equal(rot.event.kind, "rotated");
      assert.deepEqual(rot.event.publicKey, key(9));

      const rev = await s.devices.revoke(`${u}-a`, "console:s2");
      assert.equal(rev.device.status, "revoked");
      assert.equal(rev.event.kind, "revoked");
      await assert.rejects(s.devices.revoke(`${u}-a`, "x"), isA(TransitionNotAllowed, "revoked"));
      await assert.rejects(s.devices.rotateKey(`${u}-a`, key(8), "x"), isA(TransitionNotAllowed));
      await assert.rejects(s.devices.approve(`${u}-a`, "x"), isA(TransitionNotAllowed));

      const events = await s.keyEvents.export(`${u}-a`);
      assert.deepEqual(events.map((e) => e.kind), ["registered", "rotated", "revoked"]);

      await assert.rejects(
        s.devices.register(
          { id: `${u}-a`, userId: user.id, publicKey: key(1), status: "active" },
          "x",
        ),
        isA(Conflict, `${u}-a`),
      );
      await assert.rejects(
        s.devices.register(
          { id: `${u}-z`, userId: `${u}-nouser`, publicKey: key(1), status: "active" },
          "x",
        ),
        isA(NotFound, `${u}-nouser`),
      );
      await assert.rejects(
        s.devices.register(
          { id: `${u}-z`, userId: user.id, publicKey: new Uint8Array(31), status: "active" },
          "x",
        ),
        isA(InvalidValue, "31 bytes"),
      );
      await assert.rejects(
        s.devices.register(
          // deno-lint-ignore no-explicit-any
          { id: `${u}-z`, userId: user.id, publicKey: key(1), status: "revoked" as any },
          "x",
        ),
        isA(InvalidValue, "revoked"),
      );
      await assert.rejects(s.devices.approve("bad id!", "x"), isA(InvalidValue, "bad id!"));
      await assert.rejects(s.devices.approve(`${u}-none`, "x"), isA(NotFound, `${u}-none`));
      assert.equal(await s.devices.get(`${u}-none`), null);

      const before = (await s.devices.get(`${u}-p`))!;
      assert.equal(before.lastSeenAt, null);
      await s.devices.touch(`${u}-p`);
      assert.ok((await s.devices.get(`${u}-p`))!.lastSeenAt instanceof Date);
    },
  ],

  ["devices: a failed key-event write aborts the change", async (s, db, u) => {
    const { device: d } = await device(s, u, "audited", 1);
    const pending = await s.users.create({ handle: `${u}-audited2` });
    await s.devices.register(
      { id: `${u}-audited2`, userId: pending.id, publicKey: key(2), status: "pending" },
      "t",
    );
    await db.exec(`
      CREATE OR REPLACE FUNCTION test_refuse_key_event() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'key event write refused by test'; END $$;
      CREATE TRIGGER test_refuse_key_event BEFORE INSERT ON device_key_event
        FOR EACH ROW WHEN (NEW.actor = 'fail-audit') EXECUTE FUNCTION test_refuse_key_event();
    `);
    try {
      await assert.rejects(s.devices.rotateKey(d.id, key(5), "fail-audit"), isA(StorageFailure));
      await assert.rejects(s.devices.revoke(d.id, "fail-audit"), isA(StorageFailure));
      await assert.rejects(s.devices.approve(`${u}-audited2`, "fail-audit"), isA(StorageFailure));
      await assert.rejects(
        s.devices.register(
          { id: `${u}-audited3`, userId: pending.id, publicKey: key(3), status: "active" },
          "fail-audit",
        ),
        isA(StorageFailure),
      );
      const after = (await s.devices.get(d.id))!;
      assert.deepEqual(after.publicKey, key(1), "key unchanged");
      assert.equal(after.status, "active", "status unchanged");
      assert.equal((await s.devices.get(`${u}-audited2`))!.status, "pending");
      assert.equal(await s.devices.get(`${u}-audited3`), null, "no device without its event");
      assert.equal((await s.keyEvents.export(d.id)).length, 1);
    } finally {
      await db.exec(`DROP TRIGGER test_refuse_key_event ON device_key_event;
        DROP FUNCTION test_refuse_key_event();`);
    }
  }],

  ["handshake: registration table of ccp1.md §3", async (s, _db, u) => {
    const hs = (deviceId: string, k: number, user: object, autoApprove: boolean) =>
      s.devices.resolveForHandshake({
        deviceId: `${u}-${deviceId}`,
        publicKey: key(k),
        user,
        autoApprove,
      });

    // Unknown device, auto-approve: user created from the handle, device active, event.
    const reg = await hs("h1", 1, { handle: `${u}-hu`, displayName: "H U" }, true);
    assert.equal(reg.outcome, "registered");
    if (reg.outcome !== "registered") throw new Error("unreachable");
    assert.equal(reg.user.handle, `${u}-hu`);
    assert.equal(reg.user.displayName, "H U");
    assert.equal(reg.device.status, "active");
    assert.equal(reg.event.kind, "registered");
    assert.equal(reg.event.actor, "handshake");

    // Known device, same key, active → accepted, no event.
    const acc = await hs("h1", 1, { handle: `${u}-hu` }, false);
    assert.equal(acc.outcome, "accepted");
    assert.equal(acc.user.id, reg.user.id);
    assert.equal((await s.keyEvents.export(`${u}-h1`)).length, 1);

    // A new device naming an existing user (by handle or id) waits for an operator even under
    // auto-approve (ccp1.md §4.4): auto-approval covers new devices of new users only.
    const byHandle = await hs("h2", 2, { handle: `${u}-hu` }, true);
    assert.equal(byHandle.outcome, "pending");
    assert.equal(byHandle.user.id, reg.user.id);
    const byId = await hs("h3", 3, { id: reg.user.id }, true);
    assert.equal(byId.outcome, "pending");
    assert.equal(byId.user.id, reg.user.id);
    await s.devices.approve(`${u}-h2`, "cli:op");
    assert.equal((await hs("h2", 2, { handle: `${u}-hu` }, true)).outcome, "accepted");

    // Unknown user id with a handle: that user is created with that id.
    const fresh = await hs("h4", 4, { id: `${u}-uid`, handle: `${u}-hu4` }, true);
    assert.equal(fresh.user.id, `${u}-uid`);
    assert.equal(fresh.user.handle, `${u}-hu4`);
    // Unknown user id without a handle, or no user at all: refused, nothing stored.
    await assert.rejects(hs("h5", 5, { id: `${u}-nouid` }, true), isA(NotFound, `${u}-nouid`));
    await assert.rejects(hs("h5", 5, {}, true), isA(InvalidValue, "user"));
    // An unknown id whose handle belongs to someone else.
    await assert.rejects(
      hs("h5", 5, { id: `${u}-other`, handle: `${u}-hu` }, true),
      isA(Conflict, `${u}-hu`),
    );
    assert.equal(await s.devices.get(`${u}-h5`), null);

    // Unknown device, no auto-approve → pending with an event; again → pending, no new event.
    const pend = await hs("h6", 6, { handle: `${u}-hp` }, false);
    assert.equal(pend.outcome, "pending");
    if (pend.outcome !== "pending") throw new Error("unreachable");
    assert.equal(pend.device.status, "pending");
    assert.equal(pend.event?.kind, "pending");
    const again = await hs("h6", 6, { handle: `${u}-hp` }, false);
    assert.equal(again.outcome, "pending");
    assert.equal(again.outcome === "pending" && again.event, null);
    // Pending stays pending even when auto-approve is on now: an operator decides.
    assert.equal((await hs("h6", 6, { handle: `${u}-hp` }, true)).outcome, "pending");
    // A different key while pending replaces the requested key (event "pending").
    const rekey = await hs("h6", 7, { handle: `${u}-hp` }, false);
    assert.equal(rekey.outcome, "pending");
    assert.deepEqual(rekey.device.publicKey, key(7));
    assert.equal(rekey.outcome === "pending" && rekey.event?.kind, "pending");
    await s.devices.approve(`${u}-h6`, "cli:op");
    assert.equal((await hs("h6", 7, { handle: `${u}-hp` }, false)).outcome, "accepted");

    // Known device, new key, auto-approve → never a rotation: the key waits for an operator
    // (whoever knew the id could take the device over otherwise); the old key still works.
    const taken = await hs("h1", 11, { handle: `${u}-hu` }, true);
    assert.equal(taken.outcome, "pending");
    assert.equal(taken.outcome === "pending" && taken.event?.kind, "rotation-pending");
    assert.deepEqual(taken.device.publicKey, key(1));
    assert.equal((await hs("h1", 1, { handle: `${u}-hu` }, true)).outcome, "accepted");
    // The owner's rotation (from an authenticated session) replaces the key with an event.
    const rot = await s.devices.rotateKey(`${u}-h1`, key(11), `device:${u}-h1`);
    assert.deepEqual(rot.device.publicKey, key(11));
    assert.equal(rot.device.pendingPublicKey, null);
    assert.equal(rot.event.kind, "rotated");

    // Known device, new key, no auto-approve → pending key stored, old key still accepted.
    const rp = await hs("h1", 12, { handle: `${u}-hu` }, false);
    assert.equal(rp.outcome, "pending");
    assert.equal(rp.outcome === "pending" && rp.event?.kind, "rotation-pending");
    assert.deepEqual(rp.device.publicKey, key(11));
    assert.deepEqual(rp.device.pendingPublicKey, key(12));
    assert.equal(rp.device.status, "active");
    const rp2 = await hs("h1", 12, { handle: `${u}-hu` }, false);
    assert.equal(rp2.outcome === "pending" && rp2.event, null, "no duplicate event");
    assert.equal((await hs("h1", 11, { handle: `${u}-hu` }, false)).outcome, "accepted");
    const appr = await s.devices.approve(`${u}-h1`, "console:x");
    assert.deepEqual(appr.device.publicKey, key(12));
    assert.equal(appr.device.pendingPublicKey, null);
    assert.equal((await hs("h1", 12, { handle: `${u}-hu` }, false)).outcome, "accepted");
    // Rejecting a pending key drops it and keeps the device active.
    await hs("h1", 13, { handle: `${u}-hu` }, false);
    const rj = await s.devices.reject(`${u}-h1`, "console:x");
    assert.equal(rj.device.status, "active");
    assert.equal(rj.device.pendingPublicKey, null);
    assert.deepEqual(rj.event.publicKey, key(13));

    // Revoked → revoked, whatever the key.
    await s.devices.revoke(`${u}-h2`, "cli:op");
    assert.equal((await hs("h2", 2, { handle: `${u}-hu` }, true)).outcome, "revoked");
    assert.equal((await hs("h2", 22, { handle: `${u}-hu` }, true)).outcome, "revoked");

    const kinds = (await s.keyEvents.export(`${u}-h1`)).map((e) => e.kind);
    assert.deepEqual(kinds, [
      "registered",
      "rotation-pending",
      "rotated",
      "rotation-pending",
      "approved",
      "rotation-pending",
      "rejected",
    ]);
    await assert.rejects(hs("bad id!", 1, { handle: "x" }, true), isA(InvalidValue, "bad id!"));
  }],

  ["handshake: simultaneous handshakes of one new device never fail", async (s, _db, u) => {
    const results = await Promise.all(
      Array.from({ length: 6 }, () =>
        s.devices.resolveForHandshake({
          deviceId: `${u}-race`,
          publicKey: key(4),
          user: { handle: `${u}-racer` },
          autoApprove: true,
        })),
    );
    const outcomes = results.map((r) => r.outcome).sort();
    assert.deepEqual(outcomes, [
      "accepted",
      "accepted",
      "accepted",
      "accepted",
      "accepted",
      "registered",
    ]);
    assert.equal(new Set(results.map((r) => r.user.id)).size, 1);
    assert.equal((await s.keyEvents.export(`${u}-race`)).length, 1);
    // Different devices racing to create one new user by handle end up with one user.
    const many = await Promise.all(
      Array.from({ length: 5 }, (_, i) =>
        s.devices.resolveForHandshake({
          deviceId: `${u}-race-${i}`,
          publicKey: key(i + 1),
          user: { handle: `${u}-crowd` },
          autoApprove: false,
        })),
    );
    assert.ok(many.every((r) => r.outcome === "pending"));
    assert.equal(new Set(many.map((r) => r.user.id)).size, 1);
  }],

  ["devices: list filters, prefix search, keyset pages, counts", async (s, _db, u) => {
    const countsBefore = await s.devices.countByStatus();
    const owner = await s.users.create({ handle: `${u}-lister` });
    for (let i = 0; i < 7; i++) {
      await s.devices.register(
        {
          id: `${u}-L${i}`,
          userId: owner.id,
          publicKey: key(i + 1),
          status: i % 2 ? "pending" : "active",
        },
        "t",
      );
    }
    const { items, pages } = await allPages((cursor) =>
      s.devices.list({ userId: owner.id, limit: 2, cursor })
    );
    assert.equal(pages, 4);
    assert.equal(items.length, 7);
    assert.equal(new Set(items.map((d) => d.id)).size, 7, "no row twice across pages");
    for (let i = 1; i < items.length; i++) {
      assert.ok(items[i - 1].createdAt >= items[i].createdAt, "newest first");
    }
    assert.ok(items.every((d) => d.userHandle === `${u}-lister`));
    const pending = await s.devices.list({ userId: owner.id, status: "pending" });
    assert.deepEqual(pending.items.map((d) => d.id).sort(), [`${u}-L1`, `${u}-L3`, `${u}-L5`]);
    const search = await s.devices.list({ search: `${u}-l`.toUpperCase() });
    assert.equal(search.items.length, 7, "case-insensitive device id prefix");
    const byHandle = await s.devices.list({ search: `${u}-LISTER`, status: "active" });
    assert.equal(byHandle.items.length, 4, "handle prefix");
    assert.equal((await s.devices.list({ search: `${u}-L%` })).items.length, 0);
    const counts = await s.devices.countByStatus();
    assert.equal(counts.active - countsBefore.active, 4);
    assert.equal(counts.pending - countsBefore.pending, 3);
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      s.devices.list({ status: "gone" as any }),
      isA(InvalidValue, "gone"),
    );
  }],

  ["devices: awaiting approval lists new devices and new keys, keyset pages, count", async (
    s,
    _db,
    u,
  ) => {
    const countBefore = await s.devices.countAwaitingApproval();
    const owner = await s.users.create({ handle: `${u}-waiter` });
    const reg = (id: string, n: number, status: "active" | "pending") =>
      s.devices.register({ id: `${u}-${id}`, userId: owner.id, publicKey: key(n), status }, "t");
    await reg("new-1", 1, "pending");
    await reg("plain", 2, "active");
    await reg("rotating", 3, "active");
    await reg("new-2", 4, "pending");
    await reg("gone", 5, "active");
    await reg("rotating-2", 6, "active");
    await s.devices.revoke(`${u}-gone`, "t");
    // A rotation without auto-approve: the device stays active with a new key waiting.
    for (const id of ["rotating", "rotating-2"]) {
      const r = await s.devices.resolveForHandshake({
        deviceId: `${u}-${id}`,
        publicKey: key(0x40),
        user: {},
        autoApprove: false,
      });
      assert.equal(r.outcome, "pending");
      assert.equal(r.device.status, "active");
    }
    const waiting = [`${u}-new-1`, `${u}-new-2`, `${u}-rotating`, `${u}-rotating-2`];

    const { items, pages } = await allPages((cursor) =>
      s.devices.list({ userId: owner.id, awaitingApproval: true, limit: 1, cursor })
    );
    assert.equal(pages, 4);
    assert.deepEqual(items.map((d) => d.id).sort(), waiting.sort(), "each once, nothing else");
    for (let i = 1; i < items.length; i++) {
      assert.ok(items[i - 1].createdAt >= items[i].createdAt, "newest first");
    }
    const rotating = items.find((d) => d.id === `${u}-rotating`)!;
    assert.deepEqual(rotating.pendingPublicKey, key(0x40));
    assert.deepEqual(rotating.publicKey, key(3), "the old key stays until approved");
    assert.equal(rotating.userHandle, `${u}-waiter`);
    // Combined with the other filters (they are ANDed); false means no such filter.
    const keysOnly = await s.devices.list({
      userId: owner.id,
      awaitingApproval: true,
      status: "active",
    });
    assert.deepEqual(keysOnly.items.map((d) => d.id).sort(), [
      `${u}-rotating`,
      `${u}-rotating-2`,
    ]);
    const searched = await s.devices.list({ search: `${u}-ROT`, awaitingApproval: true });
    assert.equal(searched.items.length, 2);
    const unfiltered = await s.devices.list({ userId: owner.id, awaitingApproval: false });
    assert.equal(unfiltered.items.length, 6);
    assert.equal(await s.devices.countAwaitingApproval(), countBefore + 4);

    // Deciding takes a device out of the queue, whichever way.
    await s.devices.approve(`${u}-rotating`, "t");
    await s.devices.reject(`${u}-rotating-2`, "t");
    await s.devices.approve(`${u}-new-1`, "t");
    await s.devices.reject(`${u}-new-2`, "t");
    const after = await s.devices.list({ userId: owner.id, awaitingApproval: true });
    assert.deepEqual(after.items, []);
    assert.equal(after.nextCursor, null);
    assert.equal(await s.devices.countAwaitingApproval(), countBefore);
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      s.devices.list({ awaitingApproval: "yes" as any }),
      isA(InvalidValue, "awaiting approval"),
    );
  }],

  ["key events: by device, time range, pages, export order", async (s, _db, u) => {
    const { device: d } = await device(s, u, "ke", 1);
    for (let i = 2; i <= 6; i++) await s.devices.rotateKey(d.id, key(i), "t");
    const all = await s.keyEvents.export(d.id);
    assert.equal(all.length, 6);
    for (let i = 1; i < all.length; i++) assert.ok(all[i - 1].recordedAt <= all[i].recordedAt);
    const { items, pages } = await allPages((cursor) =>
      s.keyEvents.list({ deviceId: d.id, limit: 4, cursor })
    );
    assert.equal(pages, 2);
    assert.deepEqual(items.map((e) => e.eventId), all.map((e) => e.eventId).reverse());
    const future = new Date(Date.now() + 3_600_000);
    assert.equal((await s.keyEvents.list({ deviceId: d.id, from: future })).items.length, 0);
    assert.equal((await s.keyEvents.export(d.id, undefined, new Date(0))).length, 0);
    const window = await s.keyEvents.export(d.id, all[0].recordedAt, future);
    assert.equal(window.length, 6);
    assert.ok((await s.keyEvents.export(null)).length >= 6);
    await assert.rejects(
      s.keyEvents.list({ from: new Date("nope") }),
      isA(InvalidValue, "from"),
    );
  }],

  ["sessions: record, recent, by device", async (s, _db, u) => {
    const { user, device: d } = await device(s, u, "sess", 1);
    for (let i = 0; i < 5; i++) {
      const rec = await s.sessions.record({
        sessionId: `${u}-s${i}`,
        userId: user.id,
        deviceId: d.id,
        pattern: i % 2 ? "IK" : "XK",
        protocolVersion: 2,
        remoteAddr: "127.0.0.1:5000",
        nodeId: "node-a",
        ttlSeconds: 60,
      });
      assert.equal(rec.pattern, i % 2 ? "IK" : "XK");
      assert.ok(rec.createdAt instanceof Date);
    }
    const { items, pages } = await allPages((cursor) =>
      s.sessions.byDevice(d.id, { limit: 2, cursor })
    );
    assert.equal(pages, 3);
    assert.equal(items.length, 5);
    assert.equal(items[0].ttlSeconds, 60);
    assert.equal(items[0].remoteAddr, "127.0.0.1:5000");
    const recent = await s.sessions.listRecent({ limit: 500 });
    assert.ok(recent.items.filter((x) => x.deviceId === d.id).length === 5);
    await assert.rejects(
      s.sessions.record({
        sessionId: `${u}-bad`,
        userId: user.id,
        deviceId: d.id,
        // deno-lint-ignore no-explicit-any
        pattern: "NN" as any,
        protocolVersion: 1,
        remoteAddr: null,
        nodeId: "n",
        ttlSeconds: 1,
      }),
      isA(InvalidValue, "NN"),
    );
    await assert.rejects(
      s.sessions.record({
        sessionId: `${u}-s0`,
        userId: user.id,
        deviceId: d.id,
        pattern: "XK",
        protocolVersion: 1,
        remoteAddr: null,
        nodeId: "n",
        ttlSeconds: 1,
      }),
      isA(Conflict, `${u}-s0`),
    );
  }],

  ["relay: FIFO claim, markSent, ack by sequence, offsets", async (s, _db, u) => {
    const dev = `${u}-rcpt`;
    const items = Array.from({ length: 300 }, (_, i) => ({
      deviceId: dev,
      channelId: i < 150 ? 1 : 2,
      payload: new TextEncoder().encode(`frame-${i}`),
    }));
    const ids = await s.relay.enqueue(items, 3600);
    assert.equal(ids.length, 300);
    for (let i = 1; i < ids.length; i++) assert.ok(BigInt(ids[i]) > BigInt(ids[i - 1]));
    assert.deepEqual(await s.relay.depth(dev).then((d) => d.depth), 300);

    const first = await s.relay.claim(dev, `${u}-sess1`);
    assert.equal(first.length, 128, "default batch is 128");
    assert.deepEqual(first.map((e) => e.envelopeId), ids.slice(0, 128), "FIFO");
    assert.equal(new TextDecoder().decode(first[0].payload), "frame-0");
    assert.equal(first[0].payload.constructor, Uint8Array);
    assert.equal(first[0].attempts, 1);
    assert.equal(first[0].lastSequence, null);
    const second = await s.relay.claim(dev, `${u}-sess1`, 10);
    assert.deepEqual(second.map((e) => e.envelopeId), ids.slice(128, 138), "claimed skipped");

    await s.relay.markSent(
      `${u}-sess1`,
      first.map((e, i) => ({ envelopeId: e.envelopeId, sequence: 1000 + i })),
    );
    // Another session's ACK, or an unknown sequence, deletes nothing.
    assert.deepEqual(await s.relay.ack(dev, `${u}-sess2`, [1000, 1001]), []);
    assert.deepEqual(await s.relay.ack(dev, `${u}-sess1`, [5]), []);
    const acked = await s.relay.ack(dev, `${u}-sess1`, [1000, 1001, 1002]);
    assert.deepEqual(acked.map((e) => e.envelopeId), ids.slice(0, 3));
    assert.equal(acked[2].lastSequence, 1002);
    assert.equal(await s.offsets.read(dev, 1), ids[2]);
    assert.equal(await s.offsets.read(dev, 2), null);
    assert.equal((await s.relay.depth(dev)).depth, 297);
    // Acking an older envelope later never moves the offset back.
    await s.relay.ack(dev, `${u}-sess1`, Array.from({ length: 125 }, (_, i) => 1003 + i));
    assert.equal(await s.offsets.read(dev, 1), ids[127]);
    assert.equal((await s.relay.depth(dev)).depth, 172);

    await assert.rejects(s.relay.claim(dev, `${u}-s`, 129), isA(InvalidValue, "129"));
    await assert.rejects(s.relay.claim(dev, `${u}-s`, 0), isA(InvalidValue, "claim limit"));
    await assert.rejects(
      s.relay.enqueue([{ deviceId: "bad id", channelId: 1, payload: new Uint8Array() }], 60),
      isA(InvalidValue, "bad id"),
    );
    await assert.rejects(
      s.relay.enqueue([{ deviceId: dev, channelId: -1, payload: new Uint8Array() }], 60),
      isA(InvalidValue, "channel id"),
    );
    await assert.rejects(
      s.relay.markSent(`${u}-sess1`, [{ envelopeId: "1; DROP TABLE x", sequence: 1 }]),
      isA(InvalidValue, "envelope id"),
    );
    assert.deepEqual(await s.relay.enqueue([], 60), []);
  }],

  [
    "relay: an opening session record stamps last_seen and releases earlier claims",
    async (s, _db, u) => {
      const { user, device: d } = await device(s, u, "open", 1);
      assert.equal(d.lastSeenAt, null);
      await s.relay.enqueue(
        Array.from({ length: 6 }, (_, i) => ({
          deviceId: d.id,
          channelId: 3,
          payload: new Uint8Array([i]),
        })),
        3600,
      );
      // Another device's claim is left alone.
      const other = `${u}-open-other`;
      await s.relay.enqueue(
        [{ deviceId: other, channelId: 3, payload: new Uint8Array([9]) }],
        3600,
      );
      assert.equal((await s.relay.claim(other, `${u}-other-s`, 5)).length, 1);
      assert.equal((await s.relay.claim(d.id, `${u}-old-s`, 4)).length, 4);
      const rec = await s.sessions.record({
        sessionId: `${u}-new-s`,
        userId: user.id,
        deviceId: d.id,
        pattern: "XK",
        protocolVersion: 2,
        remoteAddr: "127.0.0.1:5000",
        nodeId: "node-a",
        ttlSeconds: 60,
      }, { opening: true });
      assert.equal(rec.sessionId, `${u}-new-s`);
      assert.ok(rec.createdAt instanceof Date);
      assert.equal(rec.queued, true, "the device has envelopes queued");
      assert.ok((await s.devices.get(d.id))!.lastSeenAt instanceof Date, "last seen stamped");
      assert.equal((await s.relay.depth(d.id)).inFlight, 0, "earlier claims released");
      assert.equal((await s.relay.depth(other)).inFlight, 1, "other devices untouched");
      assert.equal((await s.relay.claim(d.id, `${u}-new-s`, 10)).length, 6);
      // A refused row (duplicate session id) changes nothing else either.
      await assert.rejects(
        s.sessions.record({ ...rec, sessionId: `${u}-new-s` }, { opening: true }),
      );
      assert.equal((await s.relay.depth(d.id)).inFlight, 6, "claims of the failed statement kept");
      // A device with nothing queued is told so (its session skips the first claim).
      const { user: emptyUser, device: empty } = await device(s, u, "open-empty", 1);
      const none = await s.sessions.record({
        sessionId: `${u}-empty-s`,
        userId: emptyUser.id,
        deviceId: empty.id,
        pattern: "XK",
        protocolVersion: 2,
        remoteAddr: null,
        nodeId: "node-a",
        ttlSeconds: 60,
      }, { opening: true });
      assert.equal(none.queued, false);
    },
  ],

  [
    "sessions: open admits only a device active with the key, and writes nothing otherwise",
    async (s, _db, u) => {
      const { user, device: d } = await device(s, u, "admit", 3);
      const row = (sessionId: string) => ({
        sessionId,
        deviceId: d.id,
        pattern: "XK" as const,
        protocolVersion: 2,
        remoteAddr: "127.0.0.1:5000",
        nodeId: "node-a",
        ttlSeconds: 60,
      });
      await s.relay.enqueue(
        [{ deviceId: d.id, channelId: 3, payload: new Uint8Array([1]) }],
        3600,
      );
      assert.equal((await s.relay.claim(d.id, `${u}-admit-old`, 5)).length, 1);
      // Another key, or a device that does not exist: nothing written, the claim kept.
      assert.equal(await s.sessions.open(row(`${u}-admit-k`), key(4)), null);
      assert.equal(
        await s.sessions.open({ ...row(`${u}-admit-x`), deviceId: `${u}-nobody` }, key(3)),
        null,
      );
      assert.equal((await s.devices.get(d.id))!.lastSeenAt, null, "last seen not stamped");
      assert.equal((await s.relay.depth(d.id)).inFlight, 1, "claims kept");
      assert.equal((await s.sessions.byDevice(d.id, { limit: 10 })).items.length, 0);
      const opened = await s.sessions.open(row(`${u}-admit-ok`), key(3));
      assert.deepEqual(opened, {
        queued: true,
        user: {
          id: user.id,
          handle: user.handle,
          displayName: user.displayName,
          avatarUrl: user.avatarUrl,
        },
      });
      assert.ok((await s.devices.get(d.id))!.lastSeenAt instanceof Date, "last seen stamped");
      assert.equal((await s.relay.depth(d.id)).inFlight, 0, "earlier claims released");
      const sessions = (await s.sessions.byDevice(d.id, { limit: 10 })).items;
      assert.deepEqual(sessions.map((x) => [x.sessionId, x.userId]), [[`${u}-admit-ok`, user.id]]);
      // A rotated key: only the new one is admitted. A revoked device: nothing.
      await s.devices.rotateKey(d.id, key(5), "test");
      assert.equal(await s.sessions.open(row(`${u}-admit-old-key`), key(3)), null);
      assert.ok(await s.sessions.open(row(`${u}-admit-new-key`), key(5)));
      await s.devices.revoke(d.id, "test");
      assert.equal(await s.sessions.open(row(`${u}-admit-revoked`), key(5)), null);
      assert.equal((await s.sessions.byDevice(d.id, { limit: 10 })).items.length, 2);
      // A pending device is not admitted either.
      const pendingUser = await s.users.create({ handle: `${u}-admit-p` });
      await s.devices.register(
        { id: `${u}-admit-p`, userId: pendingUser.id, publicKey: key(6), status: "pending" },
        "test",
      );
      assert.equal(
        await s.sessions.open({ ...row(`${u}-admit-p-s`), deviceId: `${u}-admit-p` }, key(6)),
        null,
      );
      await assert.rejects(s.sessions.open(row(`${u}-admit-bad`), new Uint8Array(3)));
    },
  ],

  [
    "sessions: open waits for a revocation in progress and then refuses the device",
    async (s, db, u) => {
      const { device: d } = await device(s, u, "admit-race", 7);
      let opening: Promise<unknown> | null = null;
      let settled = false;
      await db.transaction(async (q) => {
        await q.query(`SELECT 1 FROM user_device WHERE device_id = $1 FOR UPDATE`, [d.id]);
        await q.query(`UPDATE user_device SET status = 'revoked' WHERE device_id = $1`, [d.id]);
        // Started while the revocation holds the device row, still uncommitted.
        opening = s.sessions.open({
          sessionId: `${u}-race-s`,
          deviceId: d.id,
          pattern: "XK",
          protocolVersion: 2,
          remoteAddr: null,
          nodeId: "node-a",
          ttlSeconds: 60,
        }, key(7)).finally(() => (settled = true));
        await new Promise((resolve) => setTimeout(resolve, 200));
        assert.equal(settled, false, "the admission waits for the device row");
      });
      assert.equal(await opening, null, "the committed revocation is seen");
      assert.equal((await s.sessions.byDevice(d.id, { limit: 10 })).items.length, 0);
    },
  ],

  ["relay: requeue by session and device, concurrent claims never overlap", async (s, _db, u) => {
    const dev = `${u}-rq`;
    const ids = await s.relay.enqueue(
      Array.from({ length: 40 }, (_, i) => ({
        deviceId: dev,
        channelId: 7,
        payload: new Uint8Array([i]),
      })),
      3600,
    );
    const a = await s.relay.claim(dev, `${u}-A`, 10);
    await s.relay.markSent(`${u}-A`, a.map((e, i) => ({ envelopeId: e.envelopeId, sequence: i })));
    assert.equal(await s.relay.requeue({ sessionId: `${u}-A` }), 10);
    const again = await s.relay.claim(dev, `${u}-B`, 10);
    assert.deepEqual(again.map((e) => e.envelopeId), ids.slice(0, 10), "replayed first");
    assert.ok(again.every((e) => e.attempts === 2), "attempt counted");
    assert.ok(again.every((e, i) => e.lastSequence === i), "last sequence kept until resent");
    // ACK under the old session's sequences no longer matches anything.
    assert.deepEqual(await s.relay.ack(dev, `${u}-A`, [0, 1]), []);
    await s.relay.claim(dev, `${u}-C`, 5);
    assert.equal(await s.relay.requeue({ deviceId: dev }), 15);
    await assert.rejects(s.relay.requeue({}), isA(InvalidValue, "requeue"));

    const claims = await Promise.all(
      Array.from({ length: 4 }, (_, i) => s.relay.claim(dev, `${u}-P${i}`, 10)),
    );
    const seen = claims.flat().map((e) => e.envelopeId);
    assert.equal(seen.length, 40);
    assert.equal(new Set(seen).size, 40, "no envelope claimed twice");
  }],

  ["relay: expiry, purge, depth, total depth, big batches", async (s, _db, u) => {
    const dev = `${u}-exp`;
    const totalBefore = await s.relay.totalDepth();
    const big = await s.relay.enqueue(
      Array.from({ length: 1201 }, (_, i) => ({
        deviceId: `${dev}-big`,
        channelId: 1,
        payload: new Uint8Array([i & 255]),
      })),
      3600,
    );
    assert.equal(big.length, 1201);
    for (let i = 1; i < big.length; i++) assert.ok(BigInt(big[i]) > BigInt(big[i - 1]));
    const d = await s.relay.depth(`${dev}-big`);
    assert.equal(d.depth, 1201);
    assert.ok(d.oldest instanceof Date);
    assert.equal((await s.relay.depth(`${dev}-none`)).depth, 0);
    assert.equal((await s.relay.depth(`${dev}-none`)).oldest, null);
    assert.equal((await s.relay.totalDepth()) - totalBefore, 1201);

    await s.relay.enqueue([{ deviceId: dev, channelId: 1, payload: new Uint8Array([1]) }], 1);
    // Purge as of a moment after expiry: counted, and gone.
    const purged = await s.relay.purgeExpired(new Date(Date.now() + 5_000));
    assert.ok(purged >= 1);
    assert.equal((await s.relay.depth(dev)).depth, 0);
    assert.equal((await s.relay.depth(`${dev}-big`)).depth, 1201, "unexpired kept");
    assert.equal(await s.relay.purgeExpired(new Date(0)), 0);
  }],

  [
    "relay and devices: which devices have envelopes waiting, which are revoked",
    async (s, _db, u) => {
      const [a, b, c] = [`${u}-wa`, `${u}-wb`, `${u}-wc`];
      await s.relay.enqueue([
        { deviceId: a, channelId: 1, payload: new Uint8Array([1]) },
        { deviceId: a, channelId: 1, payload: new Uint8Array([2]) },
        { deviceId: b, channelId: 1, payload: new Uint8Array([3]) },
      ], 3600);
      assert.deepEqual((await s.relay.waiting([a, b, c])).sort(), [a, b].sort());
      // Claimed envelopes are not waiting: a session is already replaying them.
      await s.relay.claim(b, `${u}-sess`, 10);
      assert.deepEqual(await s.relay.waiting([a, b, c]), [a]);
      assert.deepEqual(await s.relay.waiting([]), []);
      await assert.rejects(s.relay.waiting(["" as string]), isA(InvalidValue, "device id"));

      await s.users.create({ id: `${u}-ru`, handle: `${u}-ru` });
      for (const d of ["r1", "r2"]) {
        await s.devices.register(
          {
            id: `${u}-${d}`,
            userId: `${u}-ru`,
            publicKey: new Uint8Array(32).fill(7),
            status: "active",
          },
          "t",
        );
      }
      await s.devices.revoke(`${u}-r2`, "t");
      assert.deepEqual(await s.devices.revokedAmong([`${u}-r1`, `${u}-r2`, `${u}-none`]), [
        `${u}-r2`,
      ]);
      assert.deepEqual(await s.devices.revokedAmong([]), []);
    },
  ],

  ["offsets: store, read, list", async (s, _db, u) => {
    await s.offsets.store(`${u}-ent`, 3, "42");
    await s.offsets.store(`${u}-ent`, 1, "7");
    await s.offsets.store(`${u}-ent`, 3, "43");
    assert.equal(await s.offsets.read(`${u}-ent`, 3), "43");
    const list = await s.offsets.list(`${u}-ent`);
    assert.deepEqual(list.map((o) => [o.channelId, o.envelopeId]), [[1, "7"], [3, "43"]]);
    assert.ok(list[0].updatedAt instanceof Date);
    await assert.rejects(s.offsets.store(`${u}-ent`, 1, "x"), isA(InvalidValue, "envelope id"));
  }],

  ["groups: create, members, roles, removal, audit trail", async (s, _db, u) => {
    const g = await s.groups.create({ id: `${u}-g1`, ownerDeviceId: `${u}-own`, relay: true }, "t");
    assert.equal(g.id, `${u}-g1`);
    assert.equal(g.memberCount, 1);
    assert.equal(g.relay, true);
    assert.equal(await s.groups.role(g.id, `${u}-own`), "owner");
    const auto = await s.groups.create({ ownerDeviceId: `${u}-own`, relay: false }, "t");
    assert.ok(auto.id.length > 0);
    await assert.rejects(
      s.groups.create({ id: `${u}-g1`, ownerDeviceId: `${u}-own`, relay: true }, "t"),
      isA(Conflict, `${u}-g1`),
    );

    const m = await s.groups.addMember(g.id, `${u}-m1`, "member", "handshake");
    assert.equal(m.role, "member");
    const promoted = await s.groups.addMember(g.id, `${u}-m1`, "owner", "console:s");
    assert.equal(promoted.role, "admin", "owner requests become admin");
    await s.groups.addMember(g.id, `${u}-m1`, "admin", "console:s"); // unchanged: no event
    await s.groups.addMember(g.id, "peer@remote.example", "member", "t");
    await assert.rejects(
      s.groups.addMember(g.id, `${u}-own`, "member", "t"),
      isA(TransitionNotAllowed, "owner"),
    );
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      s.groups.addMember(g.id, `${u}-m2`, "king" as any, "t"),
      isA(InvalidValue, "king"),
    );
    await assert.rejects(
      s.groups.addMember(`${u}-nogroup`, `${u}-m2`, "member", "t"),
      isA(NotFound, `${u}-nogroup`),
    );

    const roster = await s.groups.roster(g.id);
    assert.deepEqual(roster.map((r) => [r.deviceId, r.role]), [
      [`${u}-own`, "owner"],
      [`${u}-m1`, "admin"],
      ["peer@remote.example", "member"],
    ]);
    assert.equal((await s.groups.get(g.id))?.memberCount, 3);
    assert.deepEqual((await s.groups.groupsOf(`${u}-m1`)).map((x) => x.groupId), [g.id]);

    assert.equal(await s.groups.removeMember(g.id, `${u}-m1`, "console:s"), true);
    assert.equal(await s.groups.removeMember(g.id, `${u}-m1`, "console:s"), false);
    assert.equal(await s.groups.role(g.id, `${u}-m1`), null);
    await assert.rejects(s.groups.removeMember(g.id, `${u}-own`, "t"), isA(Conflict, "owns"));

    const { items, pages } = await allPages((cursor) =>
      s.groups.auditTrail(g.id, { limit: 2, cursor })
    );
    assert.equal(pages, 3);
    assert.deepEqual(items.map((e) => [e.action, e.deviceId, e.role, e.actor]).reverse(), [
      ["added", `${u}-own`, "owner", "t"],
      ["added", `${u}-m1`, "member", "handshake"],
      ["role-changed", `${u}-m1`, "admin", "console:s"],
      ["added", "peer@remote.example", "member", "t"],
      ["removed", `${u}-m1`, "admin", "console:s"],
    ]);

    for (let i = 0; i < 4; i++) {
      await s.groups.create({ id: `${u}-list-${i}`, ownerDeviceId: `${u}-own`, relay: true }, "t");
    }
    const listed = await allPages((cursor) =>
      s.groups.list({ search: `${u}-LIST`, limit: 3, cursor })
    );
    assert.deepEqual(listed.items.map((x) => x.id), [0, 1, 2, 3].map((i) => `${u}-list-${i}`));
    assert.equal(await s.groups.get(`${u}-nogroup`), null);
    await assert.rejects(s.groups.get("bad group!"), isA(InvalidValue, "bad group!"));
  }],

  ["peers: upsert, transitions, validation", async (s, _db, u) => {
    const domain = `${u}.peer.example`;
    const p = await s.peers.upsert(
      { domain: domain.toUpperCase(), endpoint: `https://${domain}/fed`, publicKey: key(1) },
      "cli:op",
    );
    assert.equal(p.domain, domain, "domains are lower-cased");
    assert.equal(p.status, "pending", "new peers start pending");
    assert.equal(p.source, "database");
    const updated = await s.peers.upsert(
      { domain, endpoint: `https://${domain}/v2`, publicKey: key(2) },
      "cli:op",
    );
    assert.equal(updated.status, "pending", "status kept");
    assert.equal(updated.endpoint, `https://${domain}/v2`);

    assert.equal((await s.peers.setStatus(domain, "active", "console:s")).status, "active");
    await assert.rejects(
      s.peers.setStatus(domain, "active", "x"),
      isA(TransitionNotAllowed, "active to active"),
    );
    assert.equal((await s.peers.setStatus(domain, "blocked", "x")).status, "blocked");
    assert.equal((await s.peers.setStatus(domain, "pending", "x")).status, "pending");
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      s.peers.setStatus(domain, "trusted" as any, "x"),
      isA(InvalidValue, "trusted"),
    );
    await assert.rejects(s.peers.setStatus(`${u}.none.example`, "active", "x"), isA(NotFound));
    await s.peers.touch(domain);
    assert.ok((await s.peers.get(domain))?.lastSeenAt instanceof Date);
    await assert.rejects(
      s.peers.upsert({ domain: "bad domain", endpoint: "https://x/", publicKey: key(1) }, "x"),
      isA(InvalidValue, "bad domain"),
    );
    await assert.rejects(
      s.peers.upsert({ domain, endpoint: "ftp://x/", publicKey: key(1) }, "x"),
      isA(InvalidValue, "ftp://x/"),
    );
    await assert.rejects(
      s.peers.upsert({ domain, endpoint: "https://x/", publicKey: new Uint8Array(3) }, "x"),
      isA(InvalidValue, "peer public key"),
    );
  }],

  ["peer audit: every change audited as peer:<domain>; static peers read-only", async (
    s,
    _db,
    u,
  ) => {
    const domain = `${u}.peer.example`;
    await s.peers.upsert(
      { domain, endpoint: `https://${domain}/fed`, publicKey: key(1) },
      "cli:op",
    );
    await s.peers.upsert({ domain, endpoint: `https://${domain}/v2`, publicKey: key(2) }, "cli:op");
    await s.peers.setStatus(domain, "active", "console:s");
    await s.peers.setStatus(domain, "blocked", "x");
    await s.peers.setStatus(domain, "pending", "x");
    // Targets name their kind, as the CLI's and the console's do: peer:<domain>.
    assert.deepEqual((await s.audit.list({ target: domain })).items, []);
    const trail = await s.audit.list({ target: `peer:${domain}` });
    assert.deepEqual(trail.items.map((e) => e.action).reverse(), [
      "peer.add",
      "peer.update",
      "peer.set-status",
      "peer.set-status",
      "peer.set-status",
    ]);
    assert.deepEqual(trail.items[0].after, {
      domain,
      endpoint: `https://${domain}/v2`,
      public_key: "02".repeat(32),
      status: "pending",
    });

    // Static peers: listed as config, always active, refused for changes with their name.
    const listed = await s.peers.list();
    const st = listed.find((x) => x.domain === STATIC_PEER.domain);
    assert.equal(st?.source, "config");
    assert.equal(st?.status, "active");
    assert.ok(listed.some((x) => x.domain === domain && x.source === "database"));
    await assert.rejects(
      s.peers.setStatus(STATIC_PEER.domain, "blocked", "x"),
      isA(Conflict, STATIC_PEER.domain),
    );
    await assert.rejects(s.peers.upsert({ ...STATIC_PEER }, "x"), isA(Conflict, "[federation]"));
    assert.equal((await s.peers.get(STATIC_PEER.domain))?.source, "config");
    const merged = await s.peers.list([{ domain, endpoint: "https://cfg/", publicKey: key(3) }]);
    assert.equal(merged.find((x) => x.domain === domain)?.source, "config", "static wins");
  }],

  ["outbox: enqueue once, claim due with lease, backoff, delivered, backlog", async (s, _db, u) => {
    const domain = `${u}.out.example`;
    const body = { event_id: `${u}-e1`, payload: { text: "hi" } };
    const e = await s.outbox.enqueue({
      eventId: `${u}-e1`,
      peerDomain: domain,
      endpoint: `https://${domain}/in`,
      body,
    });
    assert.equal(e.attempts, 0);
    assert.deepEqual(e.body, body);
    const dup = await s.outbox.enqueue({
      eventId: `${u}-e1`,
      peerDomain: domain,
      endpoint: `https://${domain}/in`,
      body,
    });
    assert.equal(dup.id, e.id, "same event for the same peer is queued once");
    await s.outbox.enqueue({
      eventId: `${u}-e2`,
      peerDomain: domain,
      endpoint: `https://${domain}/in`,
      body: [1, 2],
    });

    const now = new Date(Date.now() + 1000);
    const claimed = (await s.outbox.claimDue(500, now)).filter((x) => x.peerDomain === domain);
    assert.deepEqual(claimed.map((x) => x.eventId), [`${u}-e1`, `${u}-e2`]);
    const leased = (await s.outbox.claimDue(500, now)).filter((x) => x.peerDomain === domain);
    assert.equal(leased.length, 0, "claimed entries are leased");

    const f1 = await s.outbox.markFailed(claimed[0].id, "connect refused");
    assert.equal(f1.attempts, 1);
    assert.equal(f1.lastError, "connect refused");
    const wait1 = f1.nextAttemptAt.getTime() - Date.now();
    assert.ok(wait1 > 0 && wait1 <= 2_500, `first retry after ~2 s, got ${wait1}`);
    const f2 = await s.outbox.markFailed(claimed[0].id, "timeout");
    const wait2 = f2.nextAttemptAt.getTime() - Date.now();
    assert.ok(wait2 > 2_000 && wait2 <= 4_500, `second retry after ~4 s, got ${wait2}`);
    for (let i = 0; i < 12; i++) await s.outbox.markFailed(claimed[0].id, "down");
    const capped = await s.outbox.markFailed(claimed[0].id, "down");
    assert.ok(capped.nextAttemptAt.getTime() - Date.now() <= 3_600_500, "capped at an hour");

    await s.outbox.markDelivered(claimed[1].id);
    const backlog = (await s.outbox.backlog()).find((b) => b.peerDomain === domain);
    assert.equal(backlog?.pending, 1);
    assert.equal(backlog?.lastError, "down");
    assert.ok(backlog?.oldest instanceof Date);
    await assert.rejects(s.outbox.markDelivered("999999999"), isA(NotFound));
    await assert.rejects(s.outbox.markFailed("abc", "x"), isA(InvalidValue, "outbox id"));
    await assert.rejects(
      s.outbox.enqueue({ eventId: "e", peerDomain: "no such", endpoint: "https://x/", body: 1 }),
      isA(InvalidValue, "no such"),
    );
  }],

  ["outbox: an entry is due from the millisecond it was queued", async (s, _db, u) => {
    // Callers pass `now` in milliseconds; the database stores microseconds. A claim in the
    // millisecond of the enqueue must see the entry (it once waited for the next pass).
    const domain = `${u}.due.example`;
    for (let i = 0; i < 3; i++) {
      const e = await s.outbox.enqueue({
        eventId: `${u}-due-${i}`,
        peerDomain: domain,
        endpoint: `https://${domain}/in`,
        body: { i },
      });
      const due = (await s.outbox.claimDue(500, e.nextAttemptAt)).filter((x) =>
        x.peerDomain === domain
      );
      assert.deepEqual(due.map((x) => x.eventId), [`${u}-due-${i}`]);
      await s.outbox.markDelivered(e.id);
    }
  }],

  [
    "outbox: each peer's entries are claimed in queue order; a waiting one holds back the rest",
    async (
      s,
      _db,
      u,
    ) => {
      const [p, q] = [`${u}.order-p.example`, `${u}.order-q.example`];
      const enqueue = (domain: string, n: number) =>
        s.outbox.enqueue({
          eventId: `${u}-o${n}`,
          peerDomain: domain,
          endpoint: `https://${domain}/in`,
          body: { n },
        });
      const [p1, p2, p3] = [await enqueue(p, 1), await enqueue(p, 2), await enqueue(p, 3)];
      const q1 = await enqueue(q, 4);
      const mine = async (now: Date) =>
        (await s.outbox.claimDue(500, now)).filter((x) => x.peerDomain === p || x.peerDomain === q)
          .map((x) => x.id).sort((a, b) => Number(a) - Number(b));
      const soon = () => new Date(Date.now() + 1000);
      assert.deepEqual(await mine(soon()), [p1.id, p2.id, p3.id, q1.id]);
      // p1 failed (waits for its retry): p2 and p3, handed back, stay behind it; q is not held.
      await s.outbox.markFailed(p1.id, "HTTP 503");
      await s.outbox.release([p2.id, p3.id]);
      await s.outbox.markDelivered(q1.id);
      const q2 = await enqueue(q, 5);
      assert.deepEqual(await mine(soon()), [q2.id], "p waits behind its failed entry");
      await s.outbox.markDelivered(q2.id);
      // Once p1 is due again, the three come in order.
      const retry = new Date(Date.now() + 10_000);
      assert.deepEqual(await mine(retry), [p1.id, p2.id, p3.id]);
      // Leased entries hold back what is queued after them, too.
      const p4 = await enqueue(p, 6);
      assert.deepEqual(await mine(retry), [], "p4 waits for the leased p1..p3");
      await s.outbox.markDelivered(p1.id);
      await s.outbox.markDead(p2.id, "HTTP 400 invalid event");
      await s.outbox.markDelivered(p3.id);
      // Delivered and dead entries hold nothing back.
      assert.deepEqual(await mine(soon()), [p4.id]);
      await s.outbox.release([p4.id]);
      assert.deepEqual(await mine(soon()), [p4.id], "a released entry is due at once");
      await s.outbox.release([]);
      await assert.rejects(s.outbox.release(["x"]), isA(InvalidValue, "outbox id"));
    },
  ],

  ["outbox: markDead stops retries, keeps the error, counts dead per peer", async (s, _db, u) => {
    const domain = `${u}.dead.example`;
    const enqueue = (n: number) =>
      s.outbox.enqueue({
        eventId: `${u}-d${n}`,
        peerDomain: domain,
        endpoint: `https://${domain}/in`,
        body: { n },
      });
    const [e1, e2, e3] = [await enqueue(1), await enqueue(2), await enqueue(3)];
    assert.equal(e1.deadAt, null);
    const mine = async (now: Date) =>
      (await s.outbox.claimDue(500, now)).filter((x) => x.peerDomain === domain);
    assert.equal((await mine(new Date(Date.now() + 1000))).length, 3);

    await s.outbox.markFailed(e1.id, "HTTP 400 invalid event");
    const dead = await s.outbox.markDead(e1.id, "HTTP 400 invalid event: given up");
    assert.equal(dead.attempts, 2, "the final attempt is counted");
    assert.equal(dead.lastError, "HTTP 400 invalid event: given up");
    assert.ok(dead.deadAt instanceof Date);
    assert.equal(dead.deliveredAt, null);
    const again = await s.outbox.markDead(e1.id, "still refused");
    assert.equal(again.deadAt?.getTime(), dead.deadAt.getTime(), "first deadAt is kept");
    await s.outbox.markDelivered(e3.id);

    // Far in the future every live entry is due again; the dead one never is.
    const later = await mine(new Date(Date.now() + 10 * 86400_000));
    assert.deepEqual(later.map((x) => x.id), [e2.id]);
    const backlog = (await s.outbox.backlog()).find((b) => b.peerDomain === domain);
    assert.deepEqual(
      { pending: backlog?.pending, dead: backlog?.dead, lastError: backlog?.lastError },
      { pending: 1, dead: 1, lastError: "still refused" },
    );
    assert.equal(backlog?.oldest?.getTime(), e2.createdAt.getTime(), "oldest live entry");

    // A peer whose entries all died is still listed, with nothing pending.
    await s.outbox.markDead(e2.id, "HTTP 401 invalid signature");
    const allDead = (await s.outbox.backlog()).find((b) => b.peerDomain === domain);
    assert.deepEqual(
      { pending: allDead?.pending, dead: allDead?.dead, oldest: allDead?.oldest },
      { pending: 0, dead: 2, oldest: null },
    );
    assert.equal(allDead?.lastError, "HTTP 401 invalid signature");

    await assert.rejects(s.outbox.markDead(e3.id, "x"), isA(Conflict, "delivered"));
    await assert.rejects(s.outbox.markDead("999999999", "x"), isA(NotFound));
    await assert.rejects(s.outbox.markDead("-1", "x"), isA(InvalidValue, "outbox id"));
    const evil = await enqueue(4);
    for (const text of HOSTILE) {
      assert.equal((await s.outbox.markDead(evil.id, text)).lastError, text);
    }
  }],

  ["idempotency: claim once, release, expiry, purge, concurrent claims", async (s, db, u) => {
    const scope = `federation:${u}.example`;
    assert.equal(await s.idempotency.claim(scope, "e1", 600), true, "absent: claimed");
    assert.equal(await s.idempotency.claim(scope, "e1", 600), false, "unexpired: refused");
    assert.equal(await s.idempotency.claim(`${scope}-other`, "e1", 600), true, "scopes are apart");
    await s.idempotency.release(scope, "e1");
    await s.idempotency.release(scope, "never claimed");
    assert.equal(await s.idempotency.claim(scope, "e1", 600), true, "released: claimable again");

    // An expired claim is claimable again (moved into the past rather than waiting for it).
    const expire = (key: string) =>
      db.query(
        `UPDATE idempotency SET expires_at = now() - interval '1 second'
         WHERE scope = $1 AND key = $2`,
        [scope, key],
      );
    await expire("e1");
    assert.equal(await s.idempotency.claim(scope, "e1", 600), true, "expired: claimed again");
    assert.equal(await s.idempotency.claim(scope, "e1", 600), false);

    // Of many simultaneous claims of one key (absent, then expired), exactly one wins.
    for (const round of ["absent", "expired"]) {
      if (round === "expired") await expire("race");
      const wins = await Promise.all(
        Array.from({ length: 16 }, () => s.idempotency.claim(scope, "race", 600)),
      );
      assert.equal(wins.filter(Boolean).length, 1, `${round}: one winner, got ${wins}`);
    }

    // purgeExpired removes only expired claims, and counts them.
    await s.idempotency.claim(scope, "short", 1);
    await expire("short");
    assert.ok(await s.idempotency.purgeExpired() >= 1);
    const left = await db.query<{ key: string }>(
      `SELECT key FROM idempotency WHERE scope = $1 ORDER BY key`,
      [scope],
    );
    assert.deepEqual(left.rows.map((r) => r.key), ["e1", "race"]);
    assert.equal(await s.idempotency.purgeExpired(new Date(Date.now() - 60_000)), 0);
    assert.ok(await s.idempotency.purgeExpired(new Date(Date.now() + 3_600_000)) >= 2);
    assert.equal(await s.idempotency.claim(scope, "e1", 600), true, "purged: claimable");

    for (const evil of HOSTILE) {
      assert.equal(await s.idempotency.claim(evil, evil, 60), true);
      assert.equal(await s.idempotency.claim(evil, evil, 60), false);
      await s.idempotency.release(evil, evil);
    }
    await assert.rejects(s.idempotency.claim("", "k", 60), isA(InvalidValue, "idempotency scope"));
    await assert.rejects(s.idempotency.claim("s", "a\u0000b", 60), isA(InvalidValue, "key"));
    await assert.rejects(s.idempotency.claim("s", "k", 0), isA(InvalidValue, "ttl"));
    await assert.rejects(s.idempotency.claim("s", "k", 1.5), isA(InvalidValue, "ttl"));
    await assert.rejects(s.idempotency.release("s", ""), isA(InvalidValue, "idempotency key"));
    await assert.rejects(
      s.idempotency.purgeExpired(new Date("nope")),
      isA(InvalidValue, "now"),
    );
  }],

  ["audit: append and list with filters and pages", async (s, _db, u) => {
    for (let i = 0; i < 5; i++) {
      await s.audit.append({
        actor: `${u}-op${i % 2}`,
        action: "device.approve",
        target: `${u}-dev${i}`,
        before: { status: "pending" },
        after: { status: "active", n: i },
      });
    }
    const e = await s.audit.append({ actor: `${u}-op0`, action: "user.create", target: `${u}-x` });
    assert.equal(e.before, null);
    assert.equal(e.after, null);
    const mine = await allPages((cursor) => s.audit.list({ actor: `${u}-op0`, limit: 2, cursor }));
    assert.equal(mine.items.length, 4);
    assert.equal(mine.pages, 2);
    assert.equal(mine.items[0].action, "user.create", "newest first");
    const approvals = await s.audit.list({ actor: `${u}-op1`, action: "device.approve" });
    assert.equal(approvals.items.length, 2);
    assert.deepEqual(approvals.items[0].after, { status: "active", n: 3 });
    assert.ok(approvals.items[0].recordedAt instanceof Date);
    await assert.rejects(
      s.audit.append({ actor: "", action: "a", target: "t" }),
      isA(InvalidValue),
    );
  }],

  ["pagination: forged cursors and bad limits are InvalidValue, never SQL errors", async (s) => {
    const forged = [
      "not a cursor!",
      "'; DROP TABLE app_user; --",
      encodeCursor(["x"]).slice(0, 3),
      encodeCursor(["a", "b", "c"]),
      encodeCursor(["not-a-number", "id"]),
      btoa("{}"),
      "A".repeat(3000),
    ];
    for (const cursor of forged) {
      await assert.rejects(s.devices.list({ cursor }), isA(InvalidValue, "cursor"));
      await assert.rejects(s.audit.list({ cursor }), isA(InvalidValue, "cursor"));
      await assert.rejects(s.sessions.listRecent({ cursor }), isA(InvalidValue, "cursor"));
    }
    await assert.rejects(
      s.keyEvents.list({ cursor: encodeCursor(["1.5", "x"]) }),
      isA(InvalidValue, "cursor"),
    );
    for (const limit of [0, 501, 1.5, -1]) {
      await assert.rejects(s.users.list({ limit }), isA(InvalidValue, "limit"));
    }
    assert.equal((await s.users.list({ limit: 500 })).items.length <= 500, true);
  }],

  ["injection and markup: stored verbatim where free text, refused where validated", async (
    s,
    db,
    u,
  ) => {
    const { user, device: d } = await device(s, u, "inj", 1);
    for (const [i, evil] of HOSTILE.entries()) {
      const updated = await s.users.update(user.id, { displayName: evil, avatarUrl: evil });
      assert.equal(updated.displayName, evil);
      assert.equal((await s.users.get(user.id))?.avatarUrl, evil);
      const created = await s.users.create({ handle: `${u}-inj${i}`, displayName: evil });
      assert.equal((await s.users.getByHandle(`${u}-inj${i}`))?.displayName, evil);
      assert.equal(created.displayName, evil);

      const entry = await s.audit.append({
        actor: evil,
        action: evil,
        target: evil,
        before: { evil },
        after: [evil],
      });
      const back = (await s.audit.list({ actor: evil, action: evil, target: evil })).items;
      assert.ok(back.some((x) => x.id === entry.id));
      assert.deepEqual(back[0].before, { evil });
      assert.deepEqual(back[0].after, [evil]);

      const sess = await s.sessions.record({
        sessionId: `${u}-inj-s${i}`,
        userId: user.id,
        deviceId: d.id,
        pattern: "XK",
        protocolVersion: 1,
        remoteAddr: evil,
        nodeId: evil,
        ttlSeconds: 5,
      });
      assert.equal(sess.remoteAddr, evil);
      assert.equal(sess.nodeId, evil);

      const g = await s.groups.create(
        { id: `${u}-inj-g${i}`, ownerDeviceId: d.id, relay: true },
        evil,
      );
      const trail = await s.groups.auditTrail(g.id, {});
      assert.equal(trail.items[0].actor, evil);
      const rot = await s.devices.rotateKey(d.id, key(i + 2), evil);
      assert.equal(rot.event.actor, evil);

      const out = await s.outbox.enqueue({
        eventId: `${u}-inj-${i}`,
        peerDomain: `${u}.inj.example`,
        endpoint: "https://inj.example/in",
        body: { evil },
      });
      assert.deepEqual(out.body, { evil });
      assert.equal((await s.outbox.markFailed(out.id, evil)).lastError, evil);

      // Validated identifiers refuse such text, naming it.
      await assert.rejects(s.users.create({ handle: evil }), isA(InvalidValue, "handle"));
      await assert.rejects(
        s.groups.create({ id: evil, ownerDeviceId: d.id, relay: true }, "t"),
        isA(InvalidValue, "group id"),
      );
      await assert.rejects(s.devices.get(evil), isA(InvalidValue, "device id"));
      await assert.rejects(
        s.peers.upsert({ domain: evil, endpoint: "https://x/", publicKey: key(1) }, "t"),
        isA(InvalidValue, "domain"),
      );
      // Search text is matched literally.
      assert.equal((await s.users.list({ search: evil })).items.length, 0);
      assert.equal((await s.devices.list({ search: evil })).items.length, 0);
    }
    // Nothing was harmed.
    const tables = await db.query<{ n: string }>(
      `SELECT count(*) AS n FROM app_user WHERE handle LIKE $1`,
      [`${u}-inj%`],
    );
    assert.equal(Number(tables.rows[0].n), HOSTILE.length + 1);
    assert.ok(await s.devices.get(d.id));
  }],

  ["ids: the grammar of protocol/ids.ts; legacy ids stay reachable and are listed", async (
    s,
    db,
    u,
  ) => {
    // `+` is part of the id grammar: the codec accepts alice+phone, so storage must too.
    const user = await s.users.create({ handle: `${u}-plus`, id: `${u}+user` });
    const { device: plus } = await s.devices.register(
      { id: `${u}-alice+phone`, userId: user.id, publicKey: key(3), status: "active" },
      "test",
    );
    assert.equal((await s.devices.get(`${u}-alice+phone`))?.id, plus.id);
    const hs = await s.devices.resolveForHandshake({
      deviceId: `${u}-bob+tablet`,
      publicKey: key(4),
      user: { handle: `${u}-bob` },
      autoApprove: true,
    });
    assert.equal(hs.device.id, `${u}-bob+tablet`);
    // A leading dot (or any non-alphanumeric first character) is refused for new rows.
    for (const bad of [`.${u}`, `-${u}`, `_${u}`, `:${u}`, `@${u}`]) {
      await assert.rejects(s.users.create({ handle: `${u}-h`, id: bad }), isA(InvalidValue, bad));
      await assert.rejects(
        s.devices.register({ id: bad, userId: user.id, publicKey: key(5), status: "active" }, "t"),
        isA(InvalidValue, "device id"),
      );
      await assert.rejects(
        s.groups.create({ id: bad, ownerDeviceId: plus.id, relay: true }, "t"),
        isA(InvalidValue, "group id"),
      );
    }
    await assert.rejects(s.users.create({ handle: `.${u}` }), isA(InvalidValue, "handle"));
    await assert.rejects(s.users.create({ handle: `${u}+x` }), isA(InvalidValue, "handle"));

    // Rows stored under the earlier, looser rule: found, revoked and listed by the check.
    const legacyUser = `.${u}-user`;
    const legacyDevice = `.${u}-dev`;
    await db.query(`INSERT INTO app_user (user_id, handle) VALUES ($1, $2)`, [
      legacyUser,
      `_${u}-legacy`,
    ]);
    await db.query(
      `INSERT INTO user_device (device_id, user_id, public_key, status) VALUES ($1, $2, $3, 'active')`,
      [legacyDevice, legacyUser, key(6)],
    );
    try {
      assert.equal((await s.users.get(legacyUser))?.id, legacyUser);
      assert.equal((await s.users.getByHandle(`_${u}-legacy`))?.id, legacyUser);
      assert.equal((await s.devices.revoke(legacyDevice, "test")).device.status, "revoked");
      const found = await nonconformingIds(db, 500);
      for (
        const [kind, value] of [
          ["user id", legacyUser],
          ["handle", `_${u}-legacy`],
          ["device id", legacyDevice],
        ]
      ) {
        assert.ok(
          found.items.some((b) => b.kind === kind && b.value === value),
          `${kind} ${value} listed`,
        );
      }
      assert.ok(!found.items.some((b) => b.value.includes(`${u}-alice+phone`)));
      assert.ok(found.total >= 3);
    } finally {
      await db.query(`DELETE FROM device_key_event WHERE device_id = $1`, [legacyDevice]);
      await db.query(`DELETE FROM user_device WHERE device_id = $1`, [legacyDevice]);
      await db.query(`DELETE FROM app_user WHERE user_id = $1`, [legacyUser]);
    }
  }],

  ["migrations: up to date, idempotent, changed checksum refused", async (_s, db) => {
    const status = await migrationStatus(db);
    assert.deepEqual(status.pending, []);
    assert.deepEqual(status.mismatched, []);
    assert.ok(status.applied.some((a) => a.name === "001_init.sql"));
    assert.deepEqual(await migrate(db), [], "nothing applied twice");
    const original = status.applied.find((a) => a.name === "003_relay.sql")!.checksum;
    await db.query(`UPDATE commucat_schema_migrations SET checksum = 'tampered' WHERE name = $1`, [
      "003_relay.sql",
    ]);
    try {
      await assert.rejects(migrate(db), isA(StorageFailure, "003_relay.sql"));
      assert.deepEqual((await migrationStatus(db)).mismatched, ["003_relay.sql"]);
    } finally {
      await db.query(`UPDATE commucat_schema_migrations SET checksum = $2 WHERE name = $1`, [
        "003_relay.sql",
        original,
      ]);
    }
    assert.deepEqual(await migrate(db), []);

    // A failing migration rolls back as a whole, is not recorded, and names its file.
    const dir = await Deno.makeTempDir({ prefix: "commucat-migrations-" });
    try {
      for await (const f of Deno.readDir(MIGRATIONS_DIR)) {
        await Deno.copyFile(new URL(f.name, MIGRATIONS_DIR), `${dir}/${f.name}`);
      }
      await Deno.writeTextFile(
        `${dir}/999_broken.sql`,
        "CREATE TABLE test_half_done (x int);\nSELECT no_such_column FROM app_user;\n",
      );
      const url = new URL(`file://${dir}/`);
      await assert.rejects(migrate(db, { dir: url }), isA(StorageFailure, "999_broken.sql"));
      const half = await db.query<{ t: string | null }>(
        `SELECT to_regclass('test_half_done')::text AS t`,
      );
      assert.equal(half.rows[0].t, null, "nothing of the failed file remains");
      assert.deepEqual((await migrationStatus(db, { dir: url })).pending, ["999_broken.sql"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }],

  ["db: bytea comes back byte for byte as a plain Uint8Array", async (_s, db) => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    for (
      const value of [all, new Uint8Array(0), all.slice(250), new Uint8Array(70_000).fill(0xab)]
    ) {
      const res = await db.query<{ b: Uint8Array }>(`SELECT $1::bytea AS b`, [value]);
      const back = res.rows[0].b;
      assert.equal(Object.getPrototypeOf(back), Uint8Array.prototype);
      assert.equal(back.byteLength, back.buffer.byteLength, "owns its memory");
      assert.deepEqual(back, value);
    }
    const upper = await db.query<{ b: Uint8Array }>(`SELECT '\\xDEADbeef'::bytea AS b`);
    assert.deepEqual(upper.rows[0].b, Uint8Array.of(0xde, 0xad, 0xbe, 0xef));
  }],

  ["db: named prepared statements (Postgres prepares them, PGlite ignores the name)", async (
    s,
    db,
    u,
  ) => {
    const sql = `SELECT $1::text || '-' || g AS v FROM generate_series(1, $2::int) g ORDER BY g`;
    const name = `test_named_${u}`;
    // More than five runs, so Postgres may switch the statement to its generic plan.
    for (let n = 1; n <= 8; n++) {
      const named = await db.query<{ v: string }>(sql, [u, n], { name });
      const plain = await db.query<{ v: string }>(sql, [u, n]);
      assert.deepEqual(named.rows, plain.rows);
      assert.equal(named.rowCount, n);
    }
    const inTx = await db.transaction((tx) => tx.query<{ v: string }>(sql, ["tx", 2], { name }));
    assert.deepEqual(inTx.rows.map((r) => r.v), ["tx-1", "tx-2"]);
    const prepared = await db.withConnection(async (conn) => {
      await conn.query(sql, [u, 1], { name });
      const res = await conn.query<{ n: string }>(
        `SELECT count(*) AS n FROM pg_prepared_statements WHERE name = $1`,
        [name],
      );
      return Number(res.rows[0].n);
    });
    assert.equal(prepared, s.dbKind === "postgres" ? 1 : 0);
    // The relay's named statements keep working (and keep their meaning) on this database.
    const ids = await s.relay.enqueue([{ deviceId: `${u}-np`, channelId: 1, payload: key(1) }], 60);
    const claimed = await s.relay.claim(`${u}-np`, `${u}-s`, 128, { firstSequence: 5 });
    assert.deepEqual(claimed.map((e) => [e.envelopeId, e.lastSequence]), [[ids[0], 5]]);
    const acked = await s.relay.ack(`${u}-np`, `${u}-s`, [5], { returnPayloads: false });
    assert.deepEqual(
      acked.map(({ envelopeId, channelId, sequence }) => ({ envelopeId, channelId, sequence })),
      [{ envelopeId: ids[0], channelId: 1, sequence: 5 }],
    );

    await assert.rejects(db.query("SELECT 2", [], { name }), isA(StorageFailure, name));
    await assert.rejects(db.query("SELECT 1", [], { name: "" }), isA(StorageFailure, "name"));
    await assert.rejects(
      db.query("SELECT 1", [], { name: "x".repeat(64) }),
      isA(StorageFailure, "1 to 63"),
    );
  }],

  ["readiness reports both stores", async (s) => {
    const r = await s.readiness();
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.postgres.kind, s.dbKind);
    assert.equal(r.postgres.ok, true);
    assert.equal(r.redis.ok, true);
  }],

  ["errors are typed StorageErrors with a title and a status", async (s) => {
    try {
      await s.devices.approve("no such id!", "x");
      assert.fail("should throw");
    } catch (err) {
      assert.ok(err instanceof StorageError);
      assert.equal(err.title, "Invalid Value");
      assert.equal(err.status, 400);
    }
  }],
];

/** Register the contract suite for one backend (one Deno test, one step per case). */
/** The area of a case: the words before its first ":" ("users", "outbox", …). */
export const caseArea = (name: string) => name.split(":")[0];

/** Every case's area, in order (a fake names the ones it implements). */
export const CONTRACT_AREAS: readonly string[] = [...new Set(cases.map(([n]) => caseArea(n)))];

export function registerContract(backend: Backend): void {
  Deno.test({
    name: `storage contract (${backend.name})`,
    ignore: backend.ignore,
    // Steps share one database; Deno's sanitizers see the whole test, which closes it.
    fn: async (t) => {
      const opened = await backend.open();
      const run = crypto.randomUUID().slice(0, 8);
      try {
        for (const [i, [name, fn]] of cases.entries()) {
          if (backend.areas && !backend.areas.includes(caseArea(name))) continue;
          const reason = backend.without?.[name];
          if (reason !== undefined) {
            await t.step({ name: `${name} (ignored: ${reason})`, ignore: true, fn: () => {} });
            continue;
          }
          await t.step(name, () => fn(opened.storage, opened.db, `t${run}${i}`));
        }
        for (const name of Object.keys(backend.without ?? {})) {
          if (!cases.some(([n]) => n === name)) throw new Error(`no contract case "${name}"`);
        }
        await backend.extra?.(t, opened);
      } finally {
        await opened.close();
      }
    },
  });
}
