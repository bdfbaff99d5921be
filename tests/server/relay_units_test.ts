/** Unit tests of the relay's pure parts: channel table, bus packets, tokens, addresses, v1 policy. */
import assert from "node:assert/strict";
import { decodeBusPacket, encodeBusPacket } from "../../server/delivery/delivery.ts";
import { routed } from "../../server/session/sender_ack.ts";
import { tokenMatches } from "../../protocol/crypto.ts";
import { formatAddr, isLoopbackHost } from "../../server/transport.ts";
import { localDeviceId, remoteDomainOf } from "../../server/federation.ts";
import { ServerHandshake } from "../../server/session/handshake.ts";
import { encodeControl, FrameType } from "../../protocol/frame.ts";
import { FrameDecoder } from "../../protocol/frame.ts";
import { ProtocolError } from "../../protocol/errors.ts";
import { RelayMetrics } from "../../server/metrics.ts";
import { log } from "../../server/log.ts";
import { createLedger } from "../../storage/ledger.ts";
import type { NodeContext } from "../../server/context.ts";
import type { Storage } from "../../storage/types.ts";
import { testConfig } from "./helpers/server.ts";
import { Limits } from "../../server/limits.ts";
import { Admission } from "../../server/admission.ts";
import { MemoryEphemeralStore } from "../../storage/ephemeral/mod.ts";

Deno.test("bus packets carry the device, the frame and the ephemeral flag; junk is refused", () => {
  const item = routed({
    type: FrameType.Msg,
    channel: 9,
    payload: new Uint8Array([1, 2, 3]),
    sender: "sënder",
  });
  for (const ephemeral of [true, false]) {
    const packet = decodeBusPacket(encodeBusPacket("dévice-1", item, ephemeral))!;
    assert.equal(packet.deviceId, "dévice-1");
    assert.equal(packet.ephemeral, ephemeral);
    assert.equal(packet.item.channel, 9);
    assert.equal(packet.item.sender, "sënder");
    assert.deepEqual([...packet.item.payload], [1, 2, 3]);
  }
  assert.equal(decodeBusPacket(new Uint8Array([0, 0])), null);
  assert.equal(decodeBusPacket(new Uint8Array([0, 0, 9, 1])), null);
  assert.equal(decodeBusPacket(new Uint8Array([0, 0, 1, 65, 0xff, 0xff])), null);
});

Deno.test("admin token comparison", () => {
  assert.ok(tokenMatches("secret", "secret"));
  assert.ok(!tokenMatches("secreT", "secret"));
  assert.ok(!tokenMatches("secret-longer", "secret"));
  assert.ok(!tokenMatches("sec", "secret"));
  assert.ok(!tokenMatches("", "secret"));
});

Deno.test("loopback detection and address formatting", () => {
  for (const host of ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "::ffff:127.0.0.1", "localhost"]) {
    assert.ok(isLoopbackHost(host), host);
  }
  for (const host of ["10.0.0.1", "192.168.1.1", "::2", "128.0.0.1", "example.org"]) {
    assert.ok(!isLoopbackHost(host), host);
  }
  assert.equal(formatAddr({ transport: "tcp", hostname: "::1", port: 5 }), "[::1]:5");
  assert.equal(formatAddr({ transport: "tcp", hostname: "127.0.0.1", port: 5 }), "127.0.0.1:5");
});

Deno.test("federated member names", () => {
  assert.equal(remoteDomainOf("dev@other.example", "home.example"), "other.example");
  assert.equal(remoteDomainOf("dev@HOME.example", "home.example"), null);
  assert.equal(remoteDomainOf("dev", "home.example"), null);
  assert.equal(localDeviceId("dev@home.example", "home.example"), "dev");
  assert.equal(localDeviceId("dev", "home.example"), "dev");
});

Deno.test("the relay metrics snapshot follows the counters", async () => {
  const m = new RelayMetrics("node-x");
  m.connectionOpened();
  // The per-frame calls the connection makes (by type code), batched into the counters.
  m.frameInCode(FrameType.Msg);
  m.frameInCode(FrameType.Msg);
  m.frameOutCode(FrameType.Ack);
  m.handshakeStarted();
  m.handshakeEnded("XK", "Static Key Mismatch");
  m.enqueued(3);
  const snap = m.snapshot();
  assert.equal(snap.connections, 1);
  assert.equal(snap.framesIn, 2);
  assert.equal(snap.framesOut, 1);
  assert.equal(snap.handshakeFailures, 1);
  assert.equal(snap.relayEnqueued, 3);
  const text = await m.exposition();
  assert.match(text, /commucat_frames_in_total\{type="MSG",node="node-x"\} 2/);
  assert.match(text, /commucat_frames_out_total\{type="ACK",node="node-x"\} 1/);
  // Counted once: a second exposition does not add the batch again.
  assert.match(await m.exposition(), /commucat_frames_in_total\{type="MSG",node="node-x"\} 2/);
  assert.match(text, /commucat_handshakes_total\{pattern="XK",result="Static Key Mismatch"/);
});

/** A handshake context whose storage must not be touched. */
function bareContext(allowPlaintextV1 = false): NodeContext {
  const config = testConfig({ server: { allowPlaintextV1 } });
  const storage = new Proxy({}, {
    get() {
      throw new Error("storage must not be used");
    },
  }) as Storage;
  return {
    config,
    storage,
    metrics: new RelayMetrics("n"),
    log,
    ledger: createLedger({ mode: "null", target: null }),
    nodeId: "n",
    limits: new Limits(new MemoryEphemeralStore(), config.limits),
    admission: new Admission(config.limits),
  };
}

function helloFrame(versions: number[]) {
  const decoder = new FrameDecoder();
  decoder.push(
    encodeControl(FrameType.Hello, 0, 1, {
      pattern: "XK",
      device_id: "d1",
      client_static: "11".repeat(32),
      handshake: "22".repeat(48),
      supported_versions: versions,
    }),
  );
  return decoder.next()!;
}

Deno.test("protocol v1 is refused on plain non-loopback connections unless allowed", async () => {
  const remote = { remoteAddr: "203.0.113.9:4000", isTls: false, isLoopback: false };
  const hs = new ServerHandshake(bareContext(), remote);
  await assert.rejects(hs.onFrame(helloFrame([1])), (err: unknown) => {
    assert.ok(err instanceof ProtocolError);
    assert.equal(err.title, "Protocol Version Mismatch");
    assert.equal(err.status, 426);
    assert.equal(err.fatal, true);
    assert.match(err.detail, /TLS or loopback/);
    return true;
  });
  // Allowed by config, or inside TLS: v1 passes the version check (and fails later, on the
  // made-up Noise message, which proves the check came first).
  for (
    const [ctx, peer] of [
      [bareContext(true), remote],
      [bareContext(), { ...remote, isTls: true }],
    ] as const
  ) {
    await assert.rejects(
      new ServerHandshake(ctx, peer).onFrame(helloFrame([1])),
      (err: unknown) => {
        assert.ok(err instanceof ProtocolError);
        assert.equal(err.title, "Handshake Failed");
        return true;
      },
    );
  }
});

Deno.test("frames other than HELLO before the handshake are fatal", async () => {
  const hs = new ServerHandshake(bareContext(), {
    remoteAddr: "127.0.0.1:1",
    isTls: false,
    isLoopback: true,
  });
  const decoder = new FrameDecoder();
  decoder.push(encodeControl(FrameType.Auth, 0, 1, { handshake: "00" }));
  await assert.rejects(hs.onFrame(decoder.next()!), (err: unknown) => {
    assert.ok(err instanceof ProtocolError);
    assert.equal(err.title, "Unexpected Handshake Frame");
    assert.equal(err.fatal, true);
    return true;
  });
});
