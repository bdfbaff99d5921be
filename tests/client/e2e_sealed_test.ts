/**
 * client/e2e.ts against an in-memory hub that plays the server: it stamps the sender on every
 * relayed MSG (the `sender` capability) and answers the `keys` server request from a directory.
 */
import assert from "node:assert/strict";
import { generateKeypair, type Keypair } from "../../protocol/crypto.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { sealEnvelope } from "../../protocol/envelope.ts";
import {
  E2E,
  E2EError,
  type E2EErrorCode,
  type E2EEvents,
  type InboundLike,
  type SealingClient,
} from "../../client/e2e.ts";
import { TrustStore } from "../../client/trust.ts";

const td = new TextDecoder();

class Hub {
  directory = new Map<string, { key: Uint8Array; status: string }>();
  inbox = new Map<string, InboundLike[]>();
  /** channel → members, per device (each device's own binding). */
  bindings = new Map<string, Map<number, { members: string[]; groupId?: string }>>();
  groups = new Map<string, string[]>();
  sent: Uint8Array[] = [];

  device(id: string, keypair: Keypair = generateKeypair()): Keypair {
    this.directory.set(id, { key: keypair.publicKey, status: "active" });
    this.inbox.set(id, []);
    this.bindings.set(id, new Map());
    return keypair;
  }

  client(id: string): SealingClient {
    return {
      deviceId: id,
      sendRaw: (channel, payload) => {
        this.sent.push(payload);
        const binding = this.bindings.get(id)!.get(channel)!;
        const members = binding.groupId ? this.groups.get(binding.groupId)! : binding.members;
        for (const m of members) {
          if (m === id) continue;
          this.inbox.get(m)?.push({ kind: "MSG", channel, payload: payload.slice(), sender: id });
        }
        return Promise.resolve({ ack: this.sent.length });
      },
      serverRequest: (op, fields) => {
        assert.equal(op, "keys");
        const ids = fields.group
          ? this.groups.get(fields.group as string)!
          : fields.devices as string[];
        const devices = [];
        const notFound = [];
        for (const d of ids) {
          const e = this.directory.get(d);
          if (!e) notFound.push(d);
          else {
            devices.push({
              device: d,
              status: e.status,
              public_key: bytesToHex(e.key),
              key_change_pending: false,
              events: [],
            });
          }
        }
        return Promise.resolve({ ack: 1, op: "keys", devices, not_found: notFound, remote: [] });
      },
      conversationOf: (channel) => this.bindings.get(id)!.get(channel),
    };
  }

  join(id: string, channel: number, members: string[], groupId?: string): void {
    this.bindings.get(id)!.set(channel, { members, groupId });
  }

  take(id: string): InboundLike[] {
    const list = this.inbox.get(id)!;
    return list.splice(0, list.length);
  }
}

function setup(options: { ttl?: number } = {}) {
  const hub = new Hub();
  const keys = {
    alice: hub.device("alice"),
    bob: hub.device("bob"),
    carol: hub.device("carol"),
    mallory: hub.device("mallory"),
  };
  const e2e = (id: keyof typeof keys, trust = new TrustStore()) =>
    new E2E(hub.client(id), keys[id], { trust, directoryTtlMs: options.ttl ?? 0 });
  return { hub, keys, e2e };
}

function rejectsE2E(code: E2EErrorCode) {
  return (err: unknown) => {
    assert.ok(err instanceof E2EError, `expected E2EError, got ${err}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

Deno.test("seal and open 1:1: plaintext, sender, unverified; keys pinned on first use", async () => {
  const { hub, e2e } = setup();
  const alice = e2e("alice"), bob = e2e("bob");
  const pinned: string[] = [];
  alice.on("key-pinned", (e) => pinned.push(e.device));
  hub.join("alice", 5, ["alice", "bob"]);
  hub.join("bob", 5, ["alice", "bob"]);
  const ack = await alice.sendSealed(5, "hello bob");
  assert.deepEqual(ack.recipients, ["bob"]);
  assert.ok(ack.counter > BigInt(Date.now() - 60_000) << 10n, "counters start at the time");
  assert.deepEqual(pinned, ["bob"]);
  assert.ok(!td.decode(hub.sent[0]).includes("hello bob"), "the server sees ciphertext only");
  const [m] = hub.take("bob");
  const f = await bob.open(m);
  assert.equal(f.e2eError, null);
  assert.equal(f.sealed, true);
  assert.equal(td.decode(f.plaintext!), "hello bob");
  assert.equal(f.sender, "alice");
  assert.equal(f.verified, false);
  assert.equal(f.gap, 0);
  assert.ok(bob.trust.get("alice"), "bob pinned alice's key on first use");
});

Deno.test("safety numbers: the same on both sides, 12 groups of 5 digits, changed by a new key", async () => {
  const { hub, e2e } = setup();
  const alice = e2e("alice"), bob = e2e("bob");
  const a = await alice.safetyNumber("bob");
  const b = await bob.safetyNumber("alice");
  assert.equal(a, b);
  assert.match(a, /^\d{5}( \d{5}){11}$/);
  assert.notEqual(await alice.safetyNumber("carol"), a);
  // bob gets a new key; once alice accepts it, the number changes.
  hub.directory.set("bob", { key: generateKeypair().publicKey, status: "active" });
  await assert.rejects(alice.sendSealed(1, "x"), rejectsE2E("not-joined"));
  hub.join("alice", 1, ["alice", "bob"]);
  await assert.rejects(alice.sendSealed(1, "x"), rejectsE2E("key-changed"));
  await alice.acceptKey("bob");
  assert.notEqual(await alice.safetyNumber("bob"), a);
});

Deno.test("a key change blocks sealing until accepted; the event fires once; a verified key warns louder", async () => {
  const { hub, e2e } = setup();
  const alice = e2e("alice");
  hub.join("alice", 5, ["alice", "bob", "carol"]);
  await alice.sendSealed(5, "first");
  await alice.setVerified("bob");
  const events: E2EEvents["key-changed"][] = [];
  alice.on("key-changed", (e) => events.push(e));
  const newBob = generateKeypair();
  hub.directory.set("bob", { key: newBob.publicKey, status: "active" });
  const sentBefore = hub.sent.length;
  await assert.rejects(alice.sendSealed(5, "second"), (err) => {
    rejectsE2E("key-changed")(err);
    assert.equal((err as E2EError).device, "bob");
    assert.match((err as Error).message, /was verified/);
    return true;
  });
  await assert.rejects(alice.sendSealed(5, "third"), rejectsE2E("key-changed"));
  assert.equal(hub.sent.length, sentBefore, "nothing was sent while the key is not accepted");
  assert.equal(events.length, 1);
  assert.equal(events[0].device, "bob");
  assert.equal(events[0].wasVerified, true);
  assert.deepEqual(events[0].newKey, newBob.publicKey);
  await alice.acceptKey("bob");
  assert.equal(alice.trust.get("bob")!.verified, false, "a new key starts unverified");
  const ack = await alice.sendSealed(5, "after accept");
  assert.deepEqual(ack.recipients.sort(), ["bob", "carol"]);
  const bob = new E2E(hub.client("bob"), newBob, { directoryTtlMs: 0 });
  hub.join("bob", 5, ["alice", "bob", "carol"]);
  const last = hub.take("bob").at(-1)!;
  assert.equal(td.decode((await bob.open(last)).plaintext!), "after accept");
});

Deno.test("a message sealed with a sender's new key is held until accepted, then handed back", async () => {
  const { hub, e2e, keys } = setup();
  const alice = e2e("alice");
  hub.join("alice", 5, ["alice", "bob"]);
  hub.join("bob", 5, ["alice", "bob"]);
  const bobOld = e2e("bob");
  await bobOld.sendSealed(5, "old key");
  assert.equal(td.decode((await alice.open(hub.take("alice")[0])).plaintext!), "old key");
  // bob rotates: the directory and his device both use the new key.
  const newBob = generateKeypair();
  hub.directory.set("bob", { key: newBob.publicKey, status: "active" });
  const bobNew = new E2E(hub.client("bob"), newBob, { directoryTtlMs: 0 });
  await bobNew.sendSealed(5, "new key");
  let changed = 0;
  alice.on("key-changed", () => changed++);
  const f = await alice.open(hub.take("alice")[0]);
  assert.equal(f.plaintext, null);
  assert.equal(f.e2eError?.code, "key-changed");
  assert.equal(changed, 1);
  assert.equal(alice.heldCount("bob"), 1);
  const released = await alice.acceptKey("bob");
  assert.equal(released.length, 1);
  assert.equal(released[0].e2eError, null, String(released[0].e2eError));
  assert.equal(td.decode(released[0].plaintext!), "new key");
  assert.equal(released[0].sender, "bob");
  void keys;
});

Deno.test("a forged sender is refused: another device's stamp, or a key that is not the sender's", async () => {
  const { hub, e2e, keys } = setup();
  const bob = e2e("bob");
  hub.join("bob", 5, ["alice", "bob"]);
  await bob.safetyNumber("alice"); // bob knows alice's key
  // mallory seals an envelope naming alice as the sender, with her own key.
  const forged = sealEnvelope({
    sender: "alice",
    senderKey: keys.mallory,
    conversation: { kind: "members", members: ["alice", "bob"] },
    counter: 1,
    recipients: [{ deviceId: "bob", publicKey: keys.bob.publicKey }],
    body: new TextEncoder().encode("I am alice"),
  });
  // The server stamps the real sender: mallory.
  const stamped = await bob.open({ kind: "MSG", channel: 5, payload: forged, sender: "mallory" });
  assert.equal(stamped.e2eError?.code, "sender-mismatch");
  assert.equal(stamped.plaintext, null);
  // A server that lies about the sender: the key proves it was not alice.
  const lied = await bob.open({ kind: "MSG", channel: 5, payload: forged, sender: "alice" });
  assert.equal(lied.e2eError?.code, "tampered");
  assert.equal(lied.plaintext, null);
  assert.equal(bob.heldCount("alice"), 0);
});

Deno.test("a replay into another conversation, and a re-sent copy, are refused", async () => {
  const { hub, e2e } = setup();
  const alice = e2e("alice"), bob = e2e("bob");
  hub.join("alice", 5, ["alice", "bob"]);
  hub.join("bob", 5, ["alice", "bob"]);
  hub.join("bob", 9, ["alice", "bob", "carol"]);
  await alice.sendSealed(5, "for the pair");
  const [m] = hub.take("bob");
  assert.equal(td.decode((await bob.open(m)).plaintext!), "for the pair");
  const again = await bob.open(m);
  assert.equal(again.e2eError?.code, "replayed");
  assert.equal(again.plaintext, null);
  const moved = await bob.open({ ...m, channel: 9 });
  assert.equal(moved.e2eError?.code, "readdressed");
  assert.equal(moved.plaintext, null);
});

Deno.test("groups: sealed for every active member from the directory's roster", async () => {
  const { hub, e2e } = setup();
  hub.groups.set("team", ["alice", "bob", "carol", "mallory", "dave@other.example"]);
  hub.directory.get("mallory")!.status = "revoked";
  for (const d of ["alice", "bob", "carol"]) hub.join(d, 7, [], "team");
  const alice = e2e("alice");
  const ack = await alice.sendSealed(7, "team news");
  assert.deepEqual(ack.recipients.sort(), ["bob", "carol"]);
  assert.deepEqual(ack.skipped.sort(), ["dave@other.example", "mallory"]);
  for (const d of ["bob", "carol"] as const) {
    const f = await e2e(d).open(hub.take(d)[0]);
    assert.equal(td.decode(f.plaintext!), "team news");
    assert.deepEqual(f.conversation, { kind: "group", groupId: "team" });
  }
});

Deno.test("unknown or inactive keys, plain payloads, tampered envelopes: typed, never plaintext", async () => {
  const { hub, e2e } = setup();
  const alice = e2e("alice"), bob = e2e("bob");
  hub.join("alice", 5, ["alice", "nobody"]);
  await assert.rejects(alice.sendSealed(5, "x"), rejectsE2E("unknown-key"));
  hub.join("alice", 6, ["alice", "carol@other.example"]);
  await assert.rejects(alice.sendSealed(6, "x"), (err) => {
    rejectsE2E("unknown-key")(err);
    assert.match((err as Error).message, /other domains/);
    return true;
  });
  hub.directory.get("carol")!.status = "pending";
  hub.join("alice", 7, ["alice", "carol"]);
  await assert.rejects(alice.sendSealed(7, "x"), rejectsE2E("unknown-key"));
  const plain = await bob.open({
    kind: "MSG",
    channel: 5,
    payload: new TextEncoder().encode("hi"),
    sender: "alice",
  });
  assert.deepEqual([plain.sealed, plain.plaintext, plain.e2eError], [false, null, null]);
  hub.join("alice", 8, ["alice", "bob"]);
  hub.join("bob", 8, ["alice", "bob"]);
  await alice.sendSealed(8, "tamper");
  const [m] = hub.take("bob");
  m.payload[m.payload.length - 3] ^= 1;
  const t = await bob.open(m);
  assert.equal(t.e2eError?.code, "tampered");
  assert.equal(t.plaintext, null);
  const cut = await bob.open({ ...m, payload: m.payload.subarray(0, 40) });
  assert.equal(cut.e2eError?.code, "truncated");
  const v = m.payload.slice();
  v[3] = 9;
  assert.equal((await bob.open({ ...m, payload: v })).e2eError?.code, "version");
});

Deno.test("the trust store survives a restart: pins, verification, counters and replay windows", async () => {
  const { hub, keys } = setup();
  let saved = "";
  const persist = (t: string) => {
    saved = t;
    return Promise.resolve();
  };
  hub.join("alice", 5, ["alice", "bob"]);
  hub.join("bob", 5, ["alice", "bob"]);
  const alice = new E2E(hub.client("alice"), keys.alice, {
    trust: new TrustStore({ persist }),
    directoryTtlMs: 0,
  });
  let bobText = "";
  const bob = new E2E(hub.client("bob"), keys.bob, {
    trust: new TrustStore({ persist: (t) => (bobText = t, Promise.resolve()) }),
    directoryTtlMs: 0,
  });
  const first = await alice.sendSealed(5, "one");
  await alice.setVerified("bob");
  const [m] = hub.take("bob");
  assert.equal(td.decode((await bob.open(m)).plaintext!), "one");
  // Restarted devices.
  const alice2 = new E2E(hub.client("alice"), keys.alice, {
    trust: TrustStore.fromJSON(saved),
    directoryTtlMs: 0,
  });
  const ack = await alice2.sendSealed(5, "two");
  assert.equal(ack.counter, first.counter + 1n, "the counter continues");
  assert.equal(alice2.trust.get("bob")!.verified, true);
  const bob2 = new E2E(hub.client("bob"), keys.bob, {
    trust: TrustStore.fromJSON(bobText),
    directoryTtlMs: 0,
  });
  assert.equal((await bob2.open(m)).e2eError?.code, "replayed", "a replay after restart");
  const f = await bob2.open(hub.take("bob")[0]);
  assert.equal(td.decode(f.plaintext!), "two");
  assert.equal(f.gap, 0);
  assert.throws(() => TrustStore.fromJSON('{"version":2}'), TypeError);
});

Deno.test("openTrustStore: a file next to the key, written atomically with mode 0600; a damaged one is refused", async () => {
  const { openTrustStore, trustFileFor, KeystoreError } = await import("../../client/keystore.ts");
  const dir = await Deno.makeTempDir({ prefix: "commucat-trust-" });
  try {
    const file = trustFileFor(`${dir}/alice.json`);
    assert.equal(file, `${dir}/alice.trust.json`);
    const store = await openTrustStore(file);
    store.observe("bob", generateKeypair().publicKey);
    store.setVerified("bob", true);
    await store.save();
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    const again = await openTrustStore(file);
    assert.equal(again.get("bob")!.verified, true);
    await Deno.writeTextFile(file, "{not json");
    await assert.rejects(openTrustStore(file), KeystoreError);
    assert.equal(await Deno.readTextFile(file), "{not json", "left untouched");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
