/**
 * The EphemeralStore contract, as tests registered for any implementation. A harness opens
 * stores that share one backing (one Redis key prefix, or one in-memory hub), so a test can
 * run two "nodes" against each other.
 */
import assert from "node:assert/strict";
import { InvalidValue, RedisFailure } from "../../storage/errors.ts";
import { CONTROL_CHANNEL, decodeControl } from "../../storage/ephemeral/mod.ts";
import type { ControlEvent, EphemeralStore, Presence } from "../../storage/types.ts";
import { waitUntil } from "../helpers/wait.ts";

export interface EphemeralHarness {
  /** Open a store on this harness's shared backing; `warn` receives the store's warnings. */
  open(options?: { warn?: (message: string) => void }): Promise<EphemeralStore>;
}

/** Poll until `done()` holds; rejects naming `what` after `ms` (a bound, not a timing test). */
export const waitFor = (done: () => boolean, what: string, ms = 5000): Promise<void> =>
  waitUntil(done, what, ms, 5);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function presence(device: string): Presence {
  return {
    entity: device,
    state: "online",
    expires_at: new Date(Date.now() + 60_000).toISOString(),
    user: { id: "u-1", handle: "alice", display_name: "Alice <b>'x'</b>", avatar_url: null },
  };
}

/** Register the contract suite for one implementation; `ignore` registers it skipped. */
export function registerEphemeralContract(
  name: string,
  makeHarness: () => EphemeralHarness,
  options: { ignore?: boolean } = {},
): void {
  const test = (title: string, fn: (h: EphemeralHarness) => Promise<void>) =>
    Deno.test({
      name: `ephemeral contract (${name}): ${title}`,
      ignore: options.ignore ?? false,
      fn: () => fn(makeHarness()),
    });

  /** Open `n` stores on one harness, run `fn`, always close them. */
  async function withStores(
    h: EphemeralHarness,
    n: number,
    fn: (...stores: EphemeralStore[]) => Promise<void>,
    warn?: (message: string) => void,
  ): Promise<void> {
    const stores: EphemeralStore[] = [];
    try {
      for (let i = 0; i < n; i++) stores.push(await h.open({ warn }));
      await fn(...stores);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  }

  test("presence, routes and interrupts round-trip; missing keys read as null", (h) =>
    withStores(h, 1, async (s) => {
      assert.equal(s.kind, name.startsWith("redis") ? "redis" : "memory");
      await s.ping();
      assert.equal(await s.getPresence("dev-a"), null);
      assert.equal(await s.getRoute("dev-a"), null);
      assert.equal(await s.getInterrupt("dev-a"), null);

      const p = presence("dev-a");
      await s.setPresence("dev-a", p, 60);
      assert.deepEqual(await s.getPresence("dev-a"), p);
      await s.setPresence("dev-a", { ...p, state: "offline" }, 60);
      assert.equal((await s.getPresence("dev-a"))?.state, "offline");

      await s.setRoute("dev-a", { nodeId: "node-1", sessionId: "s-1" }, 60);
      assert.deepEqual(await s.getRoute("dev-a"), { nodeId: "node-1", sessionId: "s-1" });
      assert.equal(await s.getRoute("dev-b"), null);

      await s.setInterrupt("dev-a", "revoked", 5);
      assert.equal(await s.getInterrupt("dev-a"), "revoked");
      assert.equal(await s.getInterrupt("dev-b"), null);
    }));

  test("entries expire after their TTL", (h) =>
    withStores(h, 1, async (s) => {
      await s.setPresence("dev-exp", presence("dev-exp"), 1);
      await s.setRoute("dev-exp", { nodeId: "n", sessionId: "s" }, 1);
      await s.setInterrupt("dev-exp", "kick", 1);
      await s.setPresence("dev-keep", presence("dev-keep"), 30);
      assert.notEqual(await s.getPresence("dev-exp"), null);
      await sleep(1200);
      assert.equal(await s.getPresence("dev-exp"), null);
      assert.equal(await s.getRoute("dev-exp"), null);
      assert.equal(await s.getInterrupt("dev-exp"), null);
      assert.notEqual(await s.getPresence("dev-keep"), null);
    }));

  test("clearRoute deletes the route only while it names that session", (h) =>
    withStores(h, 1, async (s) => {
      await s.clearRoute("dev-r", "s-1"); // nothing there: no error
      await s.setRoute("dev-r", { nodeId: "node-1", sessionId: "s-old" }, 60);
      // A newer session took over the route before the old one cleaned up.
      await s.setRoute("dev-r", { nodeId: "node-2", sessionId: "s-new" }, 60);
      await s.clearRoute("dev-r", "s-old");
      assert.deepEqual(await s.getRoute("dev-r"), { nodeId: "node-2", sessionId: "s-new" });
      await s.clearRoute("dev-r", "s-new");
      assert.equal(await s.getRoute("dev-r"), null);
    }));

  test("attachSession and detachSession write route and presence together", (h) =>
    withStores(h, 2, async (s, other) => {
      const online = { ...presence("dev-as"), state: "online" as const };
      const offline = { ...presence("dev-as"), state: "offline" as const };
      await s.attachSession("dev-as", { nodeId: "node-1", sessionId: "s-old" }, online, 60);
      assert.deepEqual(await other.getRoute("dev-as"), { nodeId: "node-1", sessionId: "s-old" });
      assert.deepEqual(await other.getPresence("dev-as"), online);
      // A newer session took over: the old one's end keeps its route, sets the presence.
      await other.attachSession("dev-as", { nodeId: "node-2", sessionId: "s-new" }, online, 60);
      await s.detachSession("dev-as", "s-old", offline, 60);
      assert.deepEqual(await s.getRoute("dev-as"), { nodeId: "node-2", sessionId: "s-new" });
      assert.deepEqual(await s.getPresence("dev-as"), offline);
      await other.detachSession("dev-as", "s-new", offline, 60);
      assert.equal(await s.getRoute("dev-as"), null);
      await s.detachSession("dev-none", "s-1", { ...offline, entity: "dev-none" }, 60);
      assert.equal(await s.getRoute("dev-none"), null);
      await assert.rejects(
        s.attachSession("dev-as", { nodeId: "", sessionId: "s" }, online, 60),
        /invalid route/,
      );
      await assert.rejects(
        s.detachSession("dev-as", "s", { ...offline, state: "away" } as unknown as Presence, 60),
        InvalidValue,
      );
      await assert.rejects(s.attachSession("", { nodeId: "n", sessionId: "s" }, online, 60));
    }));

  test("bad input is refused with InvalidValue naming it", (h) =>
    withStores(h, 1, async (s) => {
      await assert.rejects(s.setPresence("", presence("x"), 10), InvalidValue);
      await assert.rejects(s.setPresence("d", presence("d"), 0), /invalid ttl 0/);
      await assert.rejects(s.setRoute("d", { nodeId: "", sessionId: "s" }, 10), /invalid route/);
      await assert.rejects(
        s.setPresence("d", { ...presence("d"), state: "away" } as unknown as Presence, 10),
        /invalid presence/,
      );
      await assert.rejects(
        s.publish("", new Uint8Array(1)),
        (e) => e instanceof InvalidValue && /bus channel/.test(e.message),
      );
      await assert.rejects(
        s.publishControl({ kind: "device-nuked", deviceId: "d" } as unknown as ControlEvent),
        /invalid control event/,
      );
      await assert.rejects(
        s.publishControl({ kind: "peer-status", domain: "x.example", status: "odd" } as never),
        InvalidValue,
      );
    }));

  test("binary bus round-trips every byte value and empty messages", (h) =>
    withStores(h, 1, async (s) => {
      const got: Uint8Array[] = [];
      const off = await s.subscribe("frames", (m) => got.push(m));
      const all = Uint8Array.from({ length: 256 }, (_, i) => i);
      const big = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 31) & 0xff);
      await s.publish("frames", all);
      await s.publish("frames", new Uint8Array(0));
      await s.publish("frames", big.subarray(1, 69_999));
      await waitFor(() => got.length === 3, "three messages");
      assert.deepEqual(got[0], all);
      assert.equal(Object.getPrototypeOf(got[0]), Uint8Array.prototype);
      assert.equal(got[1].length, 0);
      assert.deepEqual(got[2], big.slice(1, 69_999));
      await off();
    }));

  test("the publisher may reuse its buffer once publish resolves", (h) =>
    withStores(h, 1, async (s) => {
      const got: number[] = [];
      const off = await s.subscribe("reuse", (m) => got.push(m[0]));
      const buf = new Uint8Array(1);
      for (let i = 0; i < 5; i++) {
        buf[0] = i;
        await s.publish("reuse", buf);
      }
      await waitFor(() => got.length === 5, "five messages");
      assert.deepEqual(got, [0, 1, 2, 3, 4]);
      await off();
    }));

  test("1 000 messages arrive in publish order", (h) =>
    withStores(h, 2, async (a, b) => {
      const got: number[] = [];
      const off = await b.subscribe("order", (m) =>
        got.push(new DataView(m.buffer, m.byteOffset, 4).getUint32(0)));
      const publishes: Promise<void>[] = [];
      for (let i = 0; i < 1000; i++) {
        const m = new Uint8Array(4);
        new DataView(m.buffer).setUint32(0, i);
        publishes.push(a.publish("order", m));
      }
      await Promise.all(publishes);
      await waitFor(
        () =>
          got.length === 1000,
        "1000 messages",
        10_000,
      );
      assert.deepEqual(got, Array.from({ length: 1000 }, (_, i) => i));
      await off();
    }));

  test("every subscriber of a channel gets each message; other channels do not", (h) =>
    withStores(h, 1, async (s) => {
      const one: string[] = [];
      const two: string[] = [];
      const other: string[] = [];
      const dec = (m: Uint8Array) => new TextDecoder().decode(m);
      const offs = [
        await s.subscribe("room", (m) => one.push(dec(m))),
        await s.subscribe("room", (m) => two.push(dec(m))),
        await s.subscribe("other-room", (m) => other.push(dec(m))),
      ];
      await s.publish("room", new TextEncoder().encode("hi"));
      await s.publish("other-room", new TextEncoder().encode("end"));
      await waitFor(() => other.length === 1, "the sentinel message");
      await waitFor(() => one.length === 1 && two.length === 1, "both subscribers");
      assert.deepEqual([one, two, other], [["hi"], ["hi"], ["end"]]);
      for (const off of offs) await off();
    }));

  test("a subscriber that throws does not stop delivery to the others", (h) => {
    const warnings: string[] = [];
    return withStores(h, 1, async (s) => {
      const got: number[] = [];
      const offBad = await s.subscribe("throwing", () => {
        throw new Error("handler bug");
      });
      const offGood = await s.subscribe("throwing", (m) => got.push(m[0]));
      await s.publish("throwing", Uint8Array.of(1));
      await s.publish("throwing", Uint8Array.of(2));
      await waitFor(() => got.length === 2, "two messages");
      assert.deepEqual(got, [1, 2]);
      assert.ok(warnings.some((w) => w.includes("handler bug")), warnings.join("\n"));
      await offBad();
      await offGood();
    }, (w) => warnings.push(w));
  });

  test("unsubscribe removes only that handler; the last one ends the subscription", (h) =>
    withStores(h, 1, async (s) => {
      const a: number[] = [];
      const b: number[] = [];
      const sentinel: number[] = [];
      const offA = await s.subscribe("unsub", (m) => a.push(m[0]));
      const offB = await s.subscribe("unsub", (m) => b.push(m[0]));
      const offSentinel = await s.subscribe("unsub-sentinel", (m) => sentinel.push(m[0]));
      await offA();
      await offA(); // twice is harmless
      await s.publish("unsub", Uint8Array.of(1));
      await s.publish("unsub-sentinel", Uint8Array.of(1));
      await waitFor(() => sentinel.length === 1, "sentinel 1");
      await waitFor(() => b.length === 1, "b's message");
      assert.deepEqual([a, b], [[], [1]]);

      await offB();
      await s.publish("unsub", Uint8Array.of(2));
      await s.publish("unsub-sentinel", Uint8Array.of(2));
      await waitFor(() => sentinel.length === 2, "sentinel 2");
      assert.deepEqual([a, b], [[], [1]]);

      // Subscribing again after the last unsubscribe works.
      const offC = await s.subscribe("unsub", (m) => a.push(m[0]));
      await s.publish("unsub", Uint8Array.of(3));
      await waitFor(() => a.length === 1, "the new subscription");
      assert.deepEqual(a, [3]);
      await offC();
      await offSentinel();
    }));

  test("control events round-trip; malformed ones are ignored with a warning", (h) => {
    const warnings: string[] = [];
    return withStores(h, 2, async (a, b) => {
      const got: ControlEvent[] = [];
      const off = await b.subscribeControl((e) => got.push(e));
      const events: ControlEvent[] = [
        { kind: "device-approved", deviceId: "d-1" },
        { kind: "device-revoked", deviceId: "d-2" },
        { kind: "member-removed", groupId: "g-1", deviceId: "d-3" },
        { kind: "peer-status", domain: "peer.example", status: "blocked" },
      ];
      const enc = (s: string) => new TextEncoder().encode(s);
      await a.publishControl(events[0]);
      // Raw messages on the control channel that are not control events.
      await a.publish(CONTROL_CHANNEL, enc("not json {"));
      await a.publish(CONTROL_CHANNEL, Uint8Array.of(0xff, 0xfe, 0x00));
      await a.publish(CONTROL_CHANNEL, enc(JSON.stringify({ kind: "device-revoked" })));
      await a.publish(CONTROL_CHANNEL, enc(JSON.stringify({ kind: "rm -rf", deviceId: "x" })));
      await a.publish(CONTROL_CHANNEL, enc("[1,2,3]"));
      for (const e of events.slice(1)) await a.publishControl(e);
      await waitFor(() => got.length === 4, "four control events");
      assert.deepEqual(got, events);
      await waitFor(() => warnings.length >= 5, "five warnings");
      assert.ok(warnings.every((w) => w.includes("control")), warnings.join("\n"));
      await off();
    }, (w) => warnings.push(w));
  });

  test("two nodes see each other's keys and publishes", (h) =>
    withStores(h, 2, async (node1, node2) => {
      await node1.setRoute("dev-2n", { nodeId: "node-1", sessionId: "s-1" }, 60);
      assert.deepEqual(await node2.getRoute("dev-2n"), { nodeId: "node-1", sessionId: "s-1" });
      await node2.clearRoute("dev-2n", "s-1");
      assert.equal(await node1.getRoute("dev-2n"), null);

      const at1: number[] = [];
      const at2: number[] = [];
      const off1 = await node1.subscribe("node:node-1", (m) => at1.push(m[0]));
      const off2 = await node2.subscribe("node:node-2", (m) => at2.push(m[0]));
      await node1.publish("node:node-2", Uint8Array.of(12));
      await node2.publish("node:node-1", Uint8Array.of(21));
      await waitFor(() => at1.length === 1 && at2.length === 1, "one message each way");
      assert.deepEqual([at1, at2], [[21], [12]]);

      const events: ControlEvent[] = [];
      const offControl = await node1.subscribeControl((e) => events.push(e));
      await node2.publishControl({ kind: "device-revoked", deviceId: "dev-2n" });
      await waitFor(() => events.length === 1, "the control event");
      assert.deepEqual(events, [{ kind: "device-revoked", deviceId: "dev-2n" }]);
      await Promise.all([off1(), off2(), offControl()]);
    }));

  test("a closed store refuses calls with RedisFailure", async (h) => {
    const s = await h.open();
    const got: number[] = [];
    await s.subscribe("closed", (m) => got.push(m[0]));
    await s.close();
    await s.close(); // twice is harmless
    await assert.rejects(s.ping(), RedisFailure);
    await assert.rejects(s.getRoute("d"), /redis failure/);
    await assert.rejects(s.publish("closed", Uint8Array.of(1)), RedisFailure);
    await assert.rejects(s.subscribe("closed", () => {}), RedisFailure);
    // Another store on the same backing publishing to the closed one's channel reaches nobody.
    await withStores(h, 1, async (other) => {
      const sentinel: number[] = [];
      const off = await other.subscribe("closed-sentinel", (m) => sentinel.push(m[0]));
      await other.publish("closed", Uint8Array.of(1));
      await other.publish("closed-sentinel", Uint8Array.of(1));
      await waitFor(() => sentinel.length === 1, "the sentinel");
      assert.deepEqual(got, []);
      await off();
    });
  });

  test("rate buckets: a burst, then one unit per interval; cost 0 only checks", (h) =>
    withStores(h, 2, async (a, b) => {
      const rule = { burst: 3, intervalMs: 400 };
      for (let i = 0; i < 3; i++) {
        assert.deepEqual(await a.consumeRate("pair:x", rule, 1), {
          allowed: true,
          retryAfterMs: 0,
        });
      }
      // The other store shares the bucket (what makes a limit hold across nodes).
      const refused = await b.consumeRate("pair:x", rule, 1);
      assert.equal(refused.allowed, false);
      assert.ok(refused.retryAfterMs > 0 && refused.retryAfterMs <= 400, `${refused.retryAfterMs}`);
      const check = await b.consumeRate("pair:x", rule, 0);
      assert.equal(check.allowed, false);
      // Another key is untouched; a cost above the burst takes the whole burst.
      assert.equal((await a.consumeRate("pair:y", rule, 10)).allowed, true);
      assert.equal((await a.consumeRate("pair:y", rule, 1)).allowed, false);
      // A check on a fresh key allows and takes nothing.
      assert.equal((await a.consumeRate("pair:z", rule, 0)).allowed, true);
      for (let i = 0; i < 3; i++) {
        assert.equal((await a.consumeRate("pair:z", rule, 1)).allowed, true);
      }
      await sleep(refused.retryAfterMs + 50);
      assert.equal((await b.consumeRate("pair:x", rule, 1)).allowed, true);
      assert.equal((await b.consumeRate("pair:x", rule, 1)).allowed, false);
      await assert.rejects(a.consumeRate("", rule, 1), InvalidValue);
      await assert.rejects(a.consumeRate("k", { burst: 0, intervalMs: 1 }, 1), InvalidValue);
      await assert.rejects(a.consumeRate("k", rule, -1), InvalidValue);
    }));

  test("event streams: appended entries read back in order after a position, bounded", (h) =>
    withStores(h, 2, async (a, b) => {
      assert.equal(await a.lastEventId("ev"), "0");
      assert.deepEqual(await a.readEvents("ev", "0", 10), []);
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(await a.appendEvent("ev", Uint8Array.of(i, 0xff), 1000));
      const sorted = [...ids].sort((x, y) => {
        const [xm, xn] = x.split("-").map(BigInt);
        const [ym, yn] = y.split("-").map(BigInt);
        return xm === ym ? Number(xn - yn) : Number(xm - ym);
      });
      assert.deepEqual(ids, sorted);
      assert.equal(new Set(ids).size, 5);
      assert.equal(await b.lastEventId("ev"), ids[4]);
      const all = await b.readEvents("ev", "0", 10);
      assert.deepEqual(all.map((e) => e.id), ids);
      assert.deepEqual(all.map((e) => [...e.message]), [0, 1, 2, 3, 4].map((i) => [i, 0xff]));
      const after = await b.readEvents("ev", ids[1], 2);
      assert.deepEqual(after.map((e) => e.message[0]), [2, 3]);
      assert.deepEqual(await b.readEvents("ev", ids[4], 10), []);
      // Bounded: an exact bound in memory, about the bound in Redis (MAXLEN ~).
      for (let i = 0; i < 300; i++) await a.appendEvent("ev-bounded", Uint8Array.of(i & 0xff), 50);
      const kept = await a.readEvents("ev-bounded", "0", 1000);
      assert.ok(kept.length >= 50 && kept.length < 300, `${kept.length} kept`);
      assert.equal(kept[kept.length - 1].message[0], 299 & 0xff);
      await assert.rejects(a.readEvents("ev", "not-an-id", 1), InvalidValue);
      await assert.rejects(a.appendEvent("ev", Uint8Array.of(1), 0), InvalidValue);
    }));

  test("control events are also kept in the control stream; interrupts read in bulk", (h) =>
    withStores(h, 2, async (a, b) => {
      const before = await b.lastEventId(CONTROL_CHANNEL);
      await a.publishControl({ kind: "device-revoked", deviceId: "dev-lost" });
      await a.publishControl({ kind: "member-removed", groupId: "g", deviceId: "dev-lost" });
      const kept = await b.readEvents(CONTROL_CHANNEL, before, 10);
      assert.deepEqual(kept.map((e) => decodeControl(e.message)), [
        { kind: "device-revoked", deviceId: "dev-lost" },
        { kind: "member-removed", groupId: "g", deviceId: "dev-lost" },
      ]);
      await a.setInterrupt("dev-i1", "revoked", 30);
      assert.deepEqual(await b.getInterrupts(["dev-i1", "dev-i2"]), ["revoked", null]);
      assert.deepEqual(await b.getInterrupts([]), []);
    }));

  test("conversation routes: bind, already, taken, full, unbind, joined sets, records", (h) =>
    withStores(h, 2, async (a, b) => {
      const dev = `dev-r-${crypto.randomUUID().slice(0, 8)}`;
      const other = `${dev}-peer`;
      const c1 = `d:${dev}-one`;
      const c2 = `d:${dev}-two`;
      assert.deepEqual(await a.bind(dev, 7, c1, 2, 60), { outcome: "bound" });
      assert.deepEqual(await a.bind(dev, 7, c1, 2, 60), { outcome: "already" });
      assert.deepEqual(await a.bind(dev, 7, c2, 2, 60), { outcome: "taken", conversationId: c1 });
      assert.deepEqual(await a.bind(dev, 8, c2, 2, 60), { outcome: "bound" });
      assert.deepEqual(await a.bind(dev, 9, c2, 2, 60), { outcome: "full", count: 2 });
      await b.bind(other, 7, c1, 2, 60);
      // The other node sees the same routes.
      assert.deepEqual([...(await b.bindings(dev))].sort(), [[7, c1], [8, c2]]);
      assert.deepEqual((await b.joinedOf([c1, c2])).map((j) => j.sort()), [[dev, other].sort(), [
        dev,
      ]]);
      assert.equal(await b.unbind(dev, 7), c1);
      assert.equal(await b.unbind(dev, 7), null);
      assert.deepEqual(await a.joinedOf([c1]), [[other]]);
      assert.deepEqual([...(await a.bindings(dev))], [[8, c2]]);
      await a.putConversation(c1, '{"members":["x"],"relay":true}', 60);
      assert.deepEqual(await b.getConversations([c1, c2]), [
        '{"members":["x"],"relay":true}',
        null,
      ]);
      await a.touchBindings(dev, 120);
      await assert.rejects(a.bind(dev, 0, c1, 2, 60), InvalidValue);
      await assert.rejects(a.bind(dev, 10, "", 2, 60), InvalidValue);
      await assert.rejects(a.bind(dev, 10, c1, 0, 60), InvalidValue);
    }));

  test("conversation routes expire after their TTL", (h) =>
    withStores(h, 1, async (a) => {
      const dev = `dev-x-${crypto.randomUUID().slice(0, 8)}`;
      await a.bind(dev, 1, "d:x", 4, 1);
      await a.putConversation("d:x-rec", "{}", 1);
      await sleep(1300);
      assert.equal((await a.bindings(dev)).size, 0);
      assert.deepEqual(await a.getConversations(["d:x-rec"]), [null]);
    }));
}
