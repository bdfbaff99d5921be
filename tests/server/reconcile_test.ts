/**
 * The periodic reconciliation (server/reconcile.ts) on real storage: lost nudges, revocations,
 * interrupts, routes Redis lost, and control events / route changes kept in their streams.
 */
import assert from "node:assert/strict";
import { type HeldSession, type ReconcileHost, Reconciler } from "../../server/reconcile.ts";
import { ROUTES_CHANNEL } from "../../server/context.ts";
import type { NodeContext } from "../../server/context.ts";
import { log } from "../../server/log.ts";
import type { ControlEvent } from "../../storage/types.ts";
import { openTestStorage, storageKinds, testConfig, uid } from "./helpers/server.ts";

class FakeHost implements ReconcileHost {
  held: HeldSession[] = [];
  woken: string[] = [];
  cuts: { deviceId: string; title: string }[] = [];
  controls: ControlEvent[] = [];
  routeChanges: string[] = [];
  sessions() {
    return this.held;
  }
  wake(deviceId: string) {
    this.woken.push(deviceId);
  }
  cut(deviceId: string, title: string) {
    this.cuts.push({ deviceId, title });
  }
  control(event: ControlEvent) {
    this.controls.push(event);
  }
  routeChange(message: Uint8Array) {
    this.routeChanges.push(new TextDecoder().decode(message));
  }
}

for (const kind of storageKinds()) {
  Deno.test(`reconcile (${kind}): queued frames, revocations, interrupts, routes, streams`, async () => {
    const { storage, close } = await openTestStorage(kind);
    const nodeId = uid("node");
    const ctx = { storage, log, nodeId, config: testConfig() } as unknown as NodeContext;
    const host = new FakeHost();
    const reconciler = new Reconciler(ctx, host, 60_000);
    try {
      const [a, b, c, gone] = ["a", "b", "c", "gone"].map((d) => uid(`rec-${d}`));
      const opened = Date.now() - 1000;
      host.held = [a, b, c].map((deviceId, i) => ({
        deviceId,
        sessionId: `s-${i}`,
        openedAt: opened,
      }));
      await reconciler.start(); // streams are followed from here on

      // A frame queued for a held device (its nudge lost) and one for a device held elsewhere.
      await storage.relay.enqueue([
        { deviceId: a, channelId: 1, payload: new Uint8Array([1]) },
        { deviceId: gone, channelId: 1, payload: new Uint8Array([2]) },
      ], 3600);
      // A revoked device whose revocation event never arrived.
      await storage.users.create({ id: uid("u"), handle: uid("h") }).then((u) =>
        storage.devices.register(
          { id: b, userId: u.id, publicKey: new Uint8Array(32).fill(3), status: "active" },
          "t",
        )
      );
      await storage.devices.revoke(b, "t");
      // An interrupt key for c; and a control event and a route change whose messages were lost.
      await storage.ephemeral.setInterrupt(c, "kicked by operator", 60);
      await storage.ephemeral.publishControl({ kind: "device-approved", deviceId: gone });
      await storage.ephemeral.appendEvent(ROUTES_CHANNEL, new TextEncoder().encode("r1"), 100);

      const report = await reconciler.tick();
      assert.deepEqual(report.failures, []);
      assert.deepEqual(host.woken, [a]);
      assert.deepEqual(
        host.cuts.map((x) => [x.deviceId, x.title]).sort(),
        [
          [b, "Device Revoked"],
          [c, "Session Interrupted"],
        ].sort(),
      );
      // (Other tests on a shared Redis add their own entries: look at ours.)
      const mine = () => host.controls.filter((e) => "deviceId" in e && e.deviceId === gone);
      assert.deepEqual(mine(), [{ kind: "device-approved", deviceId: gone }]);
      assert.deepEqual(host.routeChanges.filter((r) => r === "r1"), ["r1"]);
      // No route was written for the held sessions: all three are written.
      assert.equal(report.routesRewritten, 3);
      assert.deepEqual(await storage.ephemeral.getRoute(a), { nodeId, sessionId: "s-0" });

      // Nothing is handed over twice; a session of c opened after the interrupt is kept.
      host.woken = [];
      host.cuts = [];
      host.held = host.held.filter((s) => s.deviceId !== c);
      host.held.push({ deviceId: c, sessionId: "s-new", openedAt: Date.now() + 1000 });
      await storage.relay.claim(a, "s-0", 10); // a's replay took the frame
      const again = await reconciler.tick();
      assert.deepEqual(host.woken, []);
      assert.deepEqual(host.cuts.map((x) => x.deviceId), [b], "b is still revoked");
      assert.equal(mine().length, 1, "a control event is handed over once");
      assert.equal(host.routeChanges.filter((r) => r === "r1").length, 1);
      assert.equal(again.routesRewritten, 0);
    } finally {
      reconciler.stop();
      await close();
    }
  });
}

Deno.test("reconcile: a Redis failure does not stop the Postgres steps", async () => {
  const { storage, close } = await openTestStorage("embedded");
  const ctx = { storage, log, nodeId: "n", config: testConfig() } as unknown as NodeContext;
  const host = new FakeHost();
  const reconciler = new Reconciler(ctx, host, 60_000);
  try {
    const d = uid("rec-down");
    host.held = [{ deviceId: d, sessionId: "s", openedAt: 0 }];
    await reconciler.start();
    await storage.relay.enqueue([{ deviceId: d, channelId: 1, payload: new Uint8Array([1]) }], 60);
    await storage.ephemeral.close(); // the in-memory store now fails every call, like Redis down
    const report = await reconciler.tick();
    assert.deepEqual(host.woken, [d]);
    assert.equal(report.failures.length, 4, report.failures.join("; "));
    assert.ok(report.failures.every((f) => /redis failure/.test(f)), report.failures.join("; "));
  } finally {
    reconciler.stop();
    await close();
  }
});
