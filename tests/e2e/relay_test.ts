/**
 * End-to-end tests of the relay over real sockets: every frame type, both Noise patterns, both
 * protocol versions, TCP / TLS / HTTP /connect, device approval and revocation, offline replay
 * with acknowledgement and redelivery, groups, two nodes, the endpoints and the bad-input list.
 *
 * Runs on the embedded defaults (PGlite in a temp dir + in-memory store) always, and against real
 * Postgres + Redis when COMMUCAT_TEST_PG_DSN and COMMUCAT_TEST_REDIS_URL are set. One storage
 * and one main server per storage kind; the steps share them.
 */
import { getLogLevel, setLogLevel } from "../../server/log.ts";
import assert from "node:assert/strict";
import { type Frame, FrameType } from "../../protocol/frame.ts";
import { generateKeypair } from "../../protocol/crypto.ts";
import { CODEC_ERROR_TITLES } from "../../protocol/errors.ts";
import type { Storage } from "../../storage/types.ts";
import {
  clientOptions,
  connector,
  expectRefused,
  openRaw,
  readFrames,
  TestClient,
} from "../server/helpers/client.ts";
import {
  LogCapture,
  openTestStorage,
  realServices,
  startServer,
  storageKinds,
  testConfig,
  uid,
  waitFor,
} from "../server/helpers/server.ts";
import { encodeControl, encodeFrame } from "../../protocol/frame.ts";
import { encodeVarint } from "../../protocol/varint.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { HandshakeState } from "../../protocol/noise.ts";
import { connect as sdkConnect } from "../../client/sdk.ts";

/** A valid XK message 1 towards `serverStatic` (for a handshake left unfinished). */
function xkMessage1(serverStatic: Uint8Array): Uint8Array {
  return new HandshakeState({
    pattern: "XK",
    initiator: true,
    prologue: new TextEncoder().encode("commucat"),
    s: generateKeypair(),
    rs: serverStatic,
  }).writeMessage(new Uint8Array(0));
}

const text = (f: Frame) => new TextDecoder().decode(f.payload);
const problemOf = (f: Frame) => f.json as Record<string, unknown>;

const refused = expectRefused;

async function makeTlsFiles(): Promise<{ dir: string; cert: string; key: string }> {
  const dir = await Deno.makeTempDir({ prefix: "commucat-tls-" });
  const cert = `${dir}/cert.pem`;
  const key = `${dir}/key.pem`;
  const out = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-addext",
      "keyUsage=digitalSignature,keyEncipherment",
      "-addext",
      "extendedKeyUsage=serverAuth",
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return { dir, cert, key };
}

for (const kind of storageKinds()) {
  Deno.test({
    name: `relay end to end (${kind === "real" ? "Postgres + Redis" : "PGlite + memory"})`,
    sanitizeResources: true,
    sanitizeOps: true,
  }, async (t) => {
    const logs = new LogCapture().start();
    const { storage, close } = await openTestStorage(kind);
    const config = testConfig({ admin: { token: "s3cret-token" } });
    const server = await startServer(config, { storage });
    const clients: TestClient[] = [];
    const connect = connector(server, config, clients);
    // A pair that keeps talking while bad input arrives: nothing may be lost.
    const wA = uid("witness-a");
    const wB = uid("witness-b");
    let witnessCount = 0;
    let witnessA!: TestClient;
    let witnessB!: TestClient;
    const witnessChannel = 900;
    const stillServed = async () => {
      const n = ++witnessCount;
      // Both witnesses send something, so neither hits the keepalive limit.
      witnessB.control(FrameType.Presence, 0, { state: "online" });
      witnessA.msg(witnessChannel, `w${n}`);
      const got = await witnessB.nextOfType(FrameType.Msg);
      assert.equal(text(got), `w${n}`);
    };

    try {
      await t.step("witnesses connect and join", async () => {
        witnessA = await connect(wA);
        witnessB = await connect(wB, { pattern: "IK" });
        const ack = await witnessA.join(witnessChannel, [wB]);
        assert.equal(ack.type, FrameType.Ack);
        await stillServed();
      });

      await t.step("handshake matrix: XK/IK × v1/v2 × TCP and HTTP/1.1 /connect", async () => {
        let channel = 5000;
        for (const transport of ["tcp", "http"] as const) {
          for (const pattern of ["XK", "IK"] as const) {
            for (const versions of [[1], [2], [1, 2]]) {
              const id = uid(`m-${transport}-${pattern}`);
              const port = transport === "http" ? server.ports.http : server.ports.tcp;
              const c = await TestClient.connect({
                ...clientOptions(server, config, id),
                port,
                transport,
                pattern,
                versions,
              });
              assert.equal(c.version, Math.max(...versions));
              assert.equal(c.user.handle, id);
              // A round trip proves the stream (plain or secure) works both ways.
              const seq = c.control(FrameType.Join, ++channel, { members: [id], relay: true });
              const ack = await c.reply(seq);
              assert.equal(ack.type, FrameType.Ack);
              await c.close();
            }
          }
        }
        const sessions = await storage.sessions.listRecent({ limit: 5 });
        assert.ok(sessions.items.length > 0);
        await stillServed();
      });

      await t.step("v1 over HTTP/1.1 /connect: bursts of large frames arrive intact", async () => {
        // Batches past the outbound pool's buffer size, to a stream transport that may still
        // queue what it was given when its write resolves: no batch's bytes may be reused early.
        const a = await connect(uid("big-a"));
        const b = await connect(uid("big-b"), {
          port: server.ports.http,
          transport: "http",
          versions: [1],
        });
        const ch = 77;
        assert.equal((await a.join(ch, [b.options.deviceId])).type, FrameType.Ack);
        const bodies = Array.from(
          { length: 40 },
          (_, i) => `${i}:` + String.fromCharCode(65 + (i % 26)).repeat(24_000 + i),
        );
        for (const body of bodies) a.msg(ch, body);
        for (const body of bodies) {
          const f = await b.nextOfType(FrameType.Msg);
          assert.equal(text(f), body);
          b.ack(f.sequence);
        }
        await stillServed();
      });

      await t.step(
        "MSG, TYPING, KEY_UPDATE, GROUP_EVENT fan out with recipient sequences",
        async () => {
          // Per-frame "delivered frame" lines are written at debug level only.
          const level = getLogLevel();
          setLogLevel("debug");
          const a = await connect(uid("fa"));
          const b = await connect(uid("fb"), { pattern: "IK" });
          const c = await connect(uid("fc"), { versions: [1] });
          const ch = 11;
          const members = [b.options.deviceId, c.options.deviceId];
          assert.equal((await a.join(ch, members)).type, FrameType.Ack);
          const m = a.msg(ch, "hi all");
          assert.deepEqual((await a.reply(m)).json, { ack: m });
          for (const r of [b, c]) {
            const f = await r.nextOfType(FrameType.Msg);
            assert.equal(text(f), "hi all");
            assert.equal(f.channel, ch);
          }
          const ty = a.control(FrameType.Typing, ch, { typing: true });
          await a.reply(ty);
          assert.deepEqual((await b.nextOfType(FrameType.Typing)).json, { typing: true });
          const ku = a.opaque(FrameType.KeyUpdate, ch, new Uint8Array([1, 2, 3]));
          await a.reply(ku);
          assert.deepEqual([...(await c.nextOfType(FrameType.KeyUpdate)).payload], [1, 2, 3]);
          const ge = a.control(FrameType.GroupEvent, ch, { event: "renamed" });
          await a.reply(ge);
          assert.deepEqual((await b.nextOfType(FrameType.GroupEvent)).json, { event: "renamed" });
          // A recipient answers once it joined the same conversation (the same member set).
          const all = [a.options.deviceId, b.options.deviceId, c.options.deviceId];
          assert.equal((await b.join(ch, all)).type, FrameType.Ack);
          // Recipients see their own increasing sequences.
          const bm = b.msg(ch, "reply");
          await b.reply(bm);
          const got = await a.nextOfType(FrameType.Msg);
          assert.equal(text(got), "reply");
          const again = b.msg(ch, "reply 2");
          await b.reply(again);
          const got2 = await a.nextOfType(FrameType.Msg);
          assert.ok(got2.sequence > got.sequence);
          assert.ok(logs.has("delivered frame", { channel: ch }));
          setLogLevel(level);
          await stillServed();
        },
      );

      await t.step("LEAVE, PRESENCE with peer candidates, client ERROR", async () => {
        const a = await connect(uid("pa"));
        const b = await connect(uid("pb"));
        const ch = 12;
        const ack = await a.join(ch, [b.options.deviceId], { relay: false });
        assert.equal(ack.type, FrameType.Ack);
        const p = a.control(FrameType.Presence, ch, { state: "online" });
        const cand = await b.next((f) =>
          f.type === FrameType.Presence &&
          (f.json as Record<string, unknown>).candidate !== undefined
        );
        assert.equal((cand.json as Record<string, unknown>).peer, a.options.deviceId);
        assert.match(
          String((cand.json as Record<string, unknown>).candidate),
          /^127\.0\.0\.1:\d+$/,
        );
        const presence = await storage.ephemeral.getPresence(a.options.deviceId);
        assert.equal(presence?.state, "online");
        assert.ok(p > 0);
        a.control(FrameType.Error, 0, {
          type: "about:blank",
          title: "x",
          status: 400,
          detail: "",
          fatal: false,
        });
        const leave = a.control(FrameType.Leave, ch, {});
        assert.equal((await a.reply(leave)).type, FrameType.Ack);
        const m = a.msg(ch, "after leave");
        const err = await a.reply(m);
        assert.equal(err.type, FrameType.Error);
        assert.equal(problemOf(err).title, "Unknown Channel");
        assert.equal(problemOf(err).fatal, false);
        const route = await storage.ephemeral.getRoute(a.options.deviceId);
        assert.equal(route?.nodeId, server.nodeId);
        await stillServed();
      });

      await t.step("groups: create, invite with roles, group join, rejections", async () => {
        const owner = await connect(uid("go"));
        const admin = await connect(uid("gadm"));
        const plain = await connect(uid("gm"));
        const outsider = await connect(uid("gx"));
        const groupId = uid("grp");
        const ch = 13;
        const create = owner.control(FrameType.GroupCreate, ch, {
          group_id: groupId,
          members: [admin.options.deviceId],
          roles: { [admin.options.deviceId]: "admin" },
          relay: true,
        });
        assert.deepEqual((await owner.reply(create)).json, { ack: create, group_id: groupId });
        assert.equal(await storage.groups.role(groupId, owner.options.deviceId), "owner");
        assert.equal(await storage.groups.role(groupId, admin.options.deviceId), "admin");
        // An admin invites; its "owner" is lowered to "admin"; an owner's makes a co-owner.
        const inv = admin.control(FrameType.GroupInvite, 0, {
          group_id: groupId,
          device: plain.options.deviceId,
          role: "member",
        });
        assert.deepEqual((await admin.reply(inv)).json, {
          ack: inv,
          group_id: groupId,
          device: plain.options.deviceId,
          role: "member",
        });
        const lowered = uid("glow");
        const inv1 = admin.control(FrameType.GroupInvite, 0, {
          group_id: groupId,
          device: lowered,
          role: "owner",
        });
        assert.equal(((await admin.reply(inv1)).json as { role: string }).role, "admin");
        assert.equal(await storage.groups.role(groupId, lowered), "admin");
        const inv2 = owner.control(FrameType.GroupInvite, 0, {
          group_id: groupId,
          device: lowered,
          role: "owner",
        });
        assert.equal(((await owner.reply(inv2)).json as { role: string }).role, "owner");
        assert.equal(await storage.groups.role(groupId, lowered), "owner");
        // The original owner gives up ownership (the co-owner remains) ...
        const giveUp = owner.control(FrameType.GroupInvite, 0, {
          group_id: groupId,
          device: owner.options.deviceId,
          role: "admin",
        });
        assert.equal(((await owner.reply(giveUp)).json as { role: string }).role, "admin");
        // ... and may not take it back, nor demote the last owner (non-fatal refusals).
        const takeBack = owner.control(FrameType.GroupInvite, 0, {
          group_id: groupId,
          device: owner.options.deviceId,
          role: "owner",
        });
        assert.equal(problemOf(await owner.reply(takeBack)).status, 403);
        const demote = owner.control(FrameType.GroupInvite, 0, {
          group_id: groupId,
          device: lowered,
          role: "member",
        });
        assert.equal(problemOf(await owner.reply(demote)).status, 403);
        assert.equal(await storage.groups.role(groupId, lowered), "owner");
        // A plain member may not invite (non-fatal).
        const bad = plain.control(FrameType.GroupInvite, 0, {
          group_id: groupId,
          device: uid("x"),
          role: "member",
        });
        const err = await plain.reply(bad);
        assert.equal(problemOf(err).title, "Not Permitted");
        assert.equal(problemOf(err).status, 403);
        assert.equal(problemOf(err).fatal, false);
        // Group JOIN: members get the roster; a non-member is rejected and logged.
        const j = plain.control(FrameType.Join, 14, { group_id: groupId, members: [] });
        assert.deepEqual((await plain.reply(j)).json, { ack: j, group_id: groupId });
        const jx = outsider.control(FrameType.Join, 15, { group_id: groupId, members: [] });
        const rej = await outsider.reply(jx);
        assert.equal(problemOf(rej).title, "Join Rejected");
        assert.equal(problemOf(rej).status, 403);
        assert.equal(problemOf(rej).fatal, false);
        assert.ok(logs.has("group join rejected", { group_id: groupId }));
        // The group's channel fans out to the roster.
        const ev = owner.control(FrameType.GroupEvent, ch, { event: "hello group" });
        await owner.reply(ev);
        assert.deepEqual((await admin.nextOfType(FrameType.GroupEvent)).json, {
          event: "hello group",
        });
        const msg = plain.msg(14, "to the group");
        await plain.reply(msg);
        assert.equal(text(await owner.nextOfType(FrameType.Msg)), "to the group");
        // The outsider is still connected and served after its refusals.
        const own = outsider.control(FrameType.Join, 16, { members: [outsider.options.deviceId] });
        assert.equal((await outsider.reply(own)).type, FrameType.Ack);
        await stillServed();
      });

      await t.step(
        "offline delivery: queued, replayed, redelivered without ACK, deleted on ACK",
        async () => {
          const sender = await connect(uid("os"));
          const offline = uid("off");
          const ch = 20;
          await sender.join(ch, [offline]);
          let last = 0;
          for (let i = 0; i < 300; i++) last = sender.msg(ch, `queued ${i}`);
          // Every frame is ACKed to the sender once durably queued.
          assert.equal((await sender.reply(last, 20_000)).type, FrameType.Ack);
          assert.equal((await storage.relay.depth(offline)).depth, 300);
          // First connection does not ACK, then drops: everything comes back.
          const r1 = await connect(offline, { autoAck: false });
          const first: Frame[] = [];
          for (let i = 0; i < 300; i++) first.push(await r1.nextOfType(FrameType.Msg));
          assert.deepEqual(first.map(text), Array.from({ length: 300 }, (_, i) => `queued ${i}`));
          const seqs = first.map((f) => f.sequence);
          assert.equal(new Set(seqs).size, 300);
          await r1.close();
          await waitFor(async () => (await storage.relay.depth(offline)).depth === 300);
          // Second connection ACKs (one by one and in a list): the queue drains.
          const r2 = await connect(offline, { autoAck: false });
          const second: Frame[] = [];
          for (let i = 0; i < 300; i++) second.push(await r2.nextOfType(FrameType.Msg));
          assert.deepEqual(second.map(text), first.map(text));
          for (const f of second.slice(0, 100)) r2.ack(f.sequence);
          r2.control(FrameType.Ack, 0, { acks: second.slice(100).map((f) => f.sequence) });
          await waitFor(async () => (await storage.relay.depth(offline)).depth === 0);
          const offsets = await storage.offsets.list(offline);
          assert.equal(offsets.length, 1);
          assert.equal(offsets[0].channelId, ch);
          await r2.close();
          // Nothing more to replay.
          const r3 = await connect(offline);
          const probe = r3.control(FrameType.Join, 21, { members: [] });
          await r3.reply(probe);
          assert.equal(r3.received.filter((f) => f.type === FrameType.Msg).length, 0);
          // Live frames that were never queued go back to the queue when the connection drops.
          const live = await connect(uid("live"), { autoAck: false });
          await sender.join(22, [live.options.deviceId]);
          const s = sender.msg(22, "live once");
          await sender.reply(s);
          assert.equal(text(await live.nextOfType(FrameType.Msg)), "live once");
          await live.close();
          await waitFor(async () => (await storage.relay.depth(live.options.deviceId)).depth === 1);
          const back = await connect(live.options.deviceId);
          assert.equal(text(await back.nextOfType(FrameType.Msg)), "live once");
          await waitFor(async () => (await storage.relay.depth(live.options.deviceId)).depth === 0);
          const snap = server.metricsSnapshot();
          assert.ok(
            snap.relayEnqueued >= 301 && snap.relayReplayed >= 600 && snap.relayAcknowledged >= 300,
          );
          await stillServed();
        },
      );

      await t.step(
        "device approval: pending 403, approve, then accepted; revocation cuts live sessions",
        async () => {
          const strict = testConfig({ server: { autoApproveDevices: false } });
          strict.crypto = config.crypto;
          const node2 = await startServer(strict, { storage });
          try {
            const id = uid("pend");
            const keypair = generateKeypair();
            const o = { ...clientOptions(node2, strict, id), keypair };
            await refused(o, "Device Pending Approval", 403);
            assert.equal((await storage.devices.get(id))?.status, "pending");
            await refused(o, "Device Pending Approval", 403);
            await storage.devices.approve(id, "test");
            await storage.ephemeral.publishControl({ kind: "device-approved", deviceId: id });
            const ok = await TestClient.connect(o);
            // Revocation reaches the live session on this node.
            await storage.devices.revoke(id, "test");
            await storage.ephemeral.publishControl({ kind: "device-revoked", deviceId: id });
            const err = await ok.nextOfType(FrameType.Error);
            assert.equal(problemOf(err).title, "Device Revoked");
            assert.equal(problemOf(err).status, 403);
            assert.equal(problemOf(err).fatal, true);
            await ok.ended();
            await refused(o, "Device Revoked", 403);
            // A known device with a new key waits for approval too.
            const known = uid("rot");
            const k1 = generateKeypair();
            await storage.devices.register({
              id: known,
              userId: (await storage.users.create({ handle: uid("h") })).id,
              publicKey: k1.publicKey,
              status: "active",
            }, "test");
            (await TestClient.connect({ ...clientOptions(node2, strict, known), keypair: k1 }))
              .close();
            await refused(
              { ...clientOptions(node2, strict, known), keypair: generateKeypair() },
              "Device Pending Approval",
              403,
            );
          } finally {
            await node2.stop();
          }
          // Auto-approve never approves a new key for a known device (anyone knowing the id
          // could take it over): it waits for an operator, and the device keeps its key.
          const rot = uid("arot");
          const original = generateKeypair();
          await (await TestClient.connect({
            ...clientOptions(server, config, rot),
            keypair: original,
          })).close();
          await refused(
            { ...clientOptions(server, config, rot), keypair: generateKeypair() },
            "Device Pending Approval",
            403,
          );
          assert.ok(logs.has("device key awaiting approval", { device_id: rot }));
          await (await TestClient.connect({
            ...clientOptions(server, config, rot),
            keypair: original,
          })).close();
          await stillServed();
        },
      );

      await t.step("bad input: codec errors, handshake violations, refusals", async () => {
        const port = server.ports.tcp;
        // Frames before the handshake.
        {
          const raw = await openRaw({ port });
          await raw.write(encodeControl(FrameType.Join, 1, 1, { members: ["x"] }));
          const frames = await readFrames(raw);
          raw.close();
          assert.equal(frames.length, 1);
          assert.equal(problemOf(frames[0]).title, "Handshake Required");
          assert.equal(problemOf(frames[0]).status, 400);
          assert.equal(problemOf(frames[0]).fatal, true);
          await stillServed();
        }
        // A 16 MiB + 1 frame is refused from its length prefix.
        {
          const raw = await openRaw({ port });
          await raw.write(encodeVarint(16 * 1024 * 1024 + 1));
          const frames = await readFrames(raw);
          raw.close();
          assert.equal(problemOf(frames[0]).title, "Frame Too Large");
          assert.equal(problemOf(frames[0]).status, 413);
          assert.equal(problemOf(frames[0]).fatal, true);
          await stillServed();
        }
        // An unknown frame type.
        {
          const raw = await openRaw({ port });
          await raw.write(new Uint8Array([4, 0xee, 0, 1, 0]));
          const frames = await readFrames(raw);
          raw.close();
          assert.equal(problemOf(frames[0]).title, "Invalid Frame Type");
          await stillServed();
        }
        // Random and mutated frames: an ERROR with a known title, or a close — never a crash.
        {
          const hello = encodeControl(FrameType.Hello, 0, 1, {
            pattern: "XK",
            device_id: "mut",
            client_static: "00".repeat(32),
            handshake: "00".repeat(48),
          });
          const allowed = new Set<string>([
            ...CODEC_ERROR_TITLES,
            "Handshake Required",
            "Handshake Failed",
            "Unexpected Handshake Frame",
            "Invalid Control Payload",
          ]);
          for (let i = 0; i < 24; i++) {
            let bytes: Uint8Array;
            if (i % 2 === 0) {
              bytes = crypto.getRandomValues(new Uint8Array(16 + i * 8));
            } else {
              bytes = hello.slice();
              for (let k = 0; k < 3; k++) {
                bytes[Math.floor(Math.random() * bytes.length)] ^= 1 << (k + i) % 8;
              }
            }
            const raw = await openRaw({ port });
            await raw.write(bytes);
            // End our side: a decoder still waiting for bytes then sees the end of stream.
            await raw.closeWrite?.();
            const frames = await readFrames(raw, 15_000).catch(() => [] as Frame[]);
            raw.close();
            for (const f of frames) {
              if (f.type === FrameType.Error) {
                const p = problemOf(f);
                assert.ok(
                  allowed.has(String(p.title)) || p.title === "Handshake Timeout",
                  String(p.title),
                );
                assert.equal(p.fatal, true);
              }
            }
          }
          await stillServed();
        }
        // Static key that differs from the one Noise proves (XK and IK).
        for (const pattern of ["XK", "IK"] as const) {
          await refused(
            {
              ...clientOptions(server, config, uid("liar")),
              pattern,
              claimStatic: generateKeypair().publicKey,
            },
            "Static Key Mismatch",
            403,
          );
          await stillServed();
        }
        // Replayed HELLO / AUTH after the handshake.
        for (const type of [FrameType.Hello, FrameType.Auth]) {
          const c = await connect(uid("replay"));
          c.control(type, 0, { handshake: "00" });
          const err = await c.nextOfType(FrameType.Error);
          assert.equal(problemOf(err).title, "Unexpected Handshake Frame");
          assert.equal(problemOf(err).status, 400);
          assert.equal(problemOf(err).fatal, true);
          await c.ended();
          await stillServed();
        }
        // Invalid control JSON after the handshake.
        {
          const c = await connect(uid("badjson"));
          const seq = c.nextSeq();
          c.sendRaw(encodeFrame({
            type: FrameType.Join,
            channel: 1,
            sequence: seq,
            payload: new TextEncoder().encode("{not json"),
          }));
          const err = await c.nextOfType(FrameType.Error);
          assert.equal(problemOf(err).title, "Invalid Control Payload");
          assert.equal(problemOf(err).status, 400);
          assert.equal(problemOf(err).fatal, true);
          await c.ended();
          await stillServed();
        }
        // JOIN on the witnesses' channel id: a channel id is the joiner's own handle, so this is
        // the intruder's own conversation; nothing of the witnesses' reaches it or comes from it.
        {
          const c = await connect(uid("intruder"));
          const seq = c.control(FrameType.Join, witnessChannel, { members: [c.options.deviceId] });
          assert.equal((await c.reply(seq)).type, FrameType.Ack);
          const m = c.msg(witnessChannel, "sneaky");
          assert.equal((await c.reply(m)).type, FrameType.Ack);
          await stillServed();
          assert.equal(c.received.filter((f) => f.type === FrameType.Msg).length, 0);
          assert.equal(witnessB.received.filter((f) => f.type === FrameType.Msg).length, 0);
          // Binding the same channel id to another conversation is refused, non-fatally.
          const again = c.control(FrameType.Join, witnessChannel, { members: [wA, wB] });
          const err = await c.reply(again);
          assert.equal(problemOf(err).title, "Join Rejected");
          assert.equal(problemOf(err).status, 409);
          assert.equal(problemOf(err).fatal, false);
          assert.equal(problemOf(err).sequence, again);
        }
      });

      await t.step("endpoints: /healthz, /readyz, /metrics with the admin token", async () => {
        const base = `http://127.0.0.1:${server.ports.http}`;
        const http = Deno.createHttpClient({});
        const fetch = (url: string, init: RequestInit = {}) =>
          globalThis.fetch(url, { ...init, client: http });
        const health = await fetch(`${base}/healthz`);
        assert.equal(health.status, 200);
        await health.body?.cancel();
        const ready = await fetch(`${base}/readyz`);
        assert.equal(ready.status, 200);
        assert.equal((await ready.json()).ok, true);
        const none = await fetch(`${base}/metrics`);
        assert.equal(none.status, 401);
        await none.body?.cancel();
        const wrong = await fetch(`${base}/metrics`, { headers: { authorization: "Bearer nope" } });
        assert.equal(wrong.status, 401);
        assert.equal((await wrong.json()).title, "Unauthorized");
        const ok = await fetch(`${base}/metrics`, {
          headers: { authorization: "Bearer s3cret-token" },
        });
        assert.equal(ok.status, 200);
        const body = await ok.text();
        for (
          const name of [
            "commucat_connections",
            "commucat_handshakes_total",
            "commucat_frames_in_total",
            "commucat_frames_out_total",
            "commucat_relay_enqueued_total",
            "commucat_relay_replayed_total",
            "commucat_relay_acknowledged_total",
            "commucat_relay_expired_total",
            "commucat_relay_queue_depth",
            "commucat_bus_messages_total",
            "commucat_errors_total",
            "commucat_routing_latency_seconds_bucket",
          ]
        ) assert.ok(body.includes(name), `missing ${name}`);
        assert.match(body, /commucat_handshakes_total\{[^}]*pattern="XK"[^}]*result="ok"/);
        assert.match(body, /commucat_errors_total\{[^}]*title="Join Rejected"/);
        // Not ready: a storage whose Redis is down.
        const broken: Storage = {
          ...storage,
          readiness: () =>
            Promise.resolve({
              ok: false,
              postgres: { ok: true, kind: storage.dbKind },
              redis: { ok: false, kind: "redis", error: "connect ECONNREFUSED 127.0.0.1:6390" },
            }),
        };
        const sick = await startServer(testConfig(), { storage: broken });
        try {
          const res = await fetch(`http://127.0.0.1:${sick.ports.http}/readyz`);
          assert.equal(res.status, 503);
          const problem = await res.json();
          assert.equal(problem.title, "Not Ready");
          assert.match(problem.detail, /redis/);
          assert.equal(problem.redis.ok, false);
        } finally {
          await sick.stop();
        }
        const four = await fetch(`${base}/nope`);
        assert.equal(four.status, 404);
        await four.body?.cancel();
        http.close();
      });

      await t.step(
        "timeouts: abandoned handshake, idle connection; expired envelopes purged",
        async () => {
          const quick = testConfig({
            server: { handshakeTimeout: 0.4, keepalive: 0.6 },
            limits: { relayTtl: 1 },
          });
          const node = await startServer(quick, { storage });
          try {
            // HELLO then silence.
            const raw = await openRaw({ port: node.ports.tcp });
            await raw.write(encodeControl(FrameType.Hello, 0, 1, {
              pattern: "XK",
              device_id: uid("slow"),
              client_static: bytesToHex(generateKeypair().publicKey),
              handshake: bytesToHex(xkMessage1(quick.crypto.noisePublic)),
            }));
            const frames = await readFrames(raw);
            raw.close();
            const last = frames.at(-1)!;
            assert.equal(problemOf(last).title, "Handshake Timeout");
            assert.equal(problemOf(last).status, 408);
            assert.equal(problemOf(last).fatal, true);
            // Established but silent.
            const idle = await TestClient.connect(clientOptions(node, quick, uid("idle")));
            const err = await idle.nextOfType(FrameType.Error, 5000);
            assert.equal(problemOf(err).title, "Keepalive Timeout");
            await idle.ended();
            // Envelopes past relay_ttl are purged and counted.
            await storage.relay.enqueue([{
              deviceId: uid("gone"),
              channelId: 1,
              payload: new Uint8Array([1]),
            }], 1);
            await new Promise((r) => setTimeout(r, 1100));
            await node.node.purgeNow();
            assert.ok(node.metricsSnapshot().relayExpired >= 1);
          } finally {
            await node.stop();
          }
          await stillServed();
        },
      );

      await t.step(
        "TLS listener and HTTPS /connect (HTTP/2 by ALPN), v1 allowed inside TLS",
        async () => {
          const tls = await makeTlsFiles();
          const tlsConfig = testConfig({ server: { tlsCert: tls.cert, tlsKey: tls.key } });
          const caCert = await Deno.readTextFile(tls.cert);
          const node = await startServer(tlsConfig, { storage });
          try {
            assert.equal(node.tls, true);
            for (
              const [transport, port] of [["tls", node.ports.tcp], [
                "https",
                node.ports.http,
              ]] as const
            ) {
              for (const versions of [[1], [2]]) {
                const a = await TestClient.connect({
                  ...clientOptions(node, tlsConfig, uid(`tls-a`)),
                  transport,
                  port,
                  caCert,
                  versions,
                });
                const b = await TestClient.connect({
                  ...clientOptions(node, tlsConfig, uid(`tls-b`)),
                  transport,
                  port,
                  caCert,
                  pattern: "IK",
                });
                assert.equal(a.version, versions[0]);
                const ch = 31 + versions[0] * 10 + (transport === "tls" ? 0 : 100);
                await a.join(ch, [b.options.deviceId]);
                const s = a.msg(ch, `over ${transport}`);
                await a.reply(s);
                assert.equal(text(await b.nextOfType(FrameType.Msg)), `over ${transport}`);
                await a.close();
                await b.close();
              }
            }
            const client = Deno.createHttpClient({ caCerts: [caCert] });
            const health = await fetch(`https://localhost:${node.ports.http}/healthz`, { client });
            assert.equal(health.status, 200);
            await health.body?.cancel();
            client.close();
          } finally {
            await node.stop();
            await Deno.remove(tls.dir, { recursive: true });
          }
        },
      );

      await t.step(
        "two nodes: delivery across the bus, shared routes, revocation everywhere",
        async () => {
          let storage2 = storage;
          let close2 = async () => {};
          if (kind === "real") {
            const opened = await openTestStorage("real");
            storage2 = opened.storage;
            close2 = opened.close;
          }
          const cfg2 = testConfig();
          cfg2.crypto = config.crypto;
          const node2 = await startServer(cfg2, { storage: storage2 });
          try {
            assert.notEqual(node2.nodeId, server.nodeId);
            const a = await connect(uid("n1"));
            const bId = uid("n2");
            const b = await TestClient.connect(clientOptions(node2, cfg2, bId));
            await a.join(40, [bId]);
            await new Promise((r) => setTimeout(r, 100)); // route change travels the bus
            const s = a.msg(40, "across nodes");
            await a.reply(s);
            assert.equal(text(await b.nextOfType(FrameType.Msg)), "across nodes");
            // b joins the same conversation on its own node (routes live in the shared store).
            assert.equal((await b.join(40, [a.options.deviceId])).type, FrameType.Ack);
            const r = b.msg(40, "and back");
            await b.reply(r);
            assert.equal(text(await a.nextOfType(FrameType.Msg)), "and back");
            assert.ok(server.metricsSnapshot().busMessages > 0);
            // Revocation published once reaches the node that holds the device.
            await storage.devices.revoke(bId, "test");
            await storage.ephemeral.publishControl({ kind: "device-revoked", deviceId: bId });
            const err = await b.nextOfType(FrameType.Error);
            assert.equal(problemOf(err).title, "Device Revoked");
            await b.ended();
            // Now offline: frames for it are queued by whichever node handles the sender.
            const q = a.msg(40, "while away");
            await a.reply(q);
            await waitFor(async () => (await storage.relay.depth(bId)).depth === 1);
          } finally {
            await node2.stop();
            await close2();
          }
          await stillServed();
        },
      );

      await t.step(
        "graceful stop requeues what is unacknowledged and publishes offline",
        async () => {
          const cfg3 = testConfig();
          cfg3.crypto = config.crypto;
          const node3 = await startServer(cfg3, { storage });
          const aId = uid("gs-a");
          const bId = uid("gs-b");
          const a = await TestClient.connect(clientOptions(node3, cfg3, aId));
          const b = await TestClient.connect(clientOptions(node3, cfg3, bId, { autoAck: false }));
          await a.join(50, [bId]);
          const s = a.msg(50, "unacked at shutdown");
          await a.reply(s);
          await b.nextOfType(FrameType.Msg);
          await node3.stop();
          await a.ended();
          await b.ended();
          assert.equal((await storage.relay.depth(bId)).depth, 1);
          assert.equal((await storage.ephemeral.getPresence(bId))?.state, "offline");
          assert.equal(await storage.ephemeral.getRoute(bId), null);
        },
      );

      await t.step("the client SDK: join, send, receive, offline replay on reconnect", async () => {
        const common = { serverKey: config.crypto.noisePublic, keepaliveMs: 0 };
        const aliceId = uid("sdk-alice");
        const bobId = uid("sdk-bob");
        const bobKey = generateKeypair();
        const alice = await sdkConnect({
          ...common,
          transport: "http",
          url: `http://127.0.0.1:${server.ports.http}/connect`,
          deviceId: aliceId,
          keypair: generateKeypair(),
          user: { handle: aliceId },
        });
        let bob = await sdkConnect({
          ...common,
          port: server.ports.tcp,
          pattern: "IK",
          deviceId: bobId,
          keypair: bobKey,
          user: { handle: bobId },
        });
        try {
          await bob.join(60, [aliceId]);
          await alice.join(60, [bobId]);
          const acked = await alice.send(60, "hello bob");
          assert.ok(acked.ack > 0);
          // Bob first hears that alice is online (server presence), then her message.
          const inbox = bob.messages();
          const here = await inbox.next();
          assert.deepEqual([here.value.kind, here.value.peer, here.value.state], [
            "PRESENCE",
            aliceId,
            "online",
          ]);
          const first = await inbox.next();
          assert.equal(first.value.text(), "hello bob");
          first.value.ack();
          await bob.close();
          await alice.send(60, "while you were away");
          bob = await sdkConnect({
            ...common,
            port: server.ports.tcp,
            deviceId: bobId,
            keypair: bobKey,
          });
          const inbox2 = bob.messages();
          let replayed = await inbox2.next();
          while (replayed.value.kind === "PRESENCE") replayed = await inbox2.next();
          assert.equal(replayed.value.text(), "while you were away");
          replayed.value.ack();
          await waitFor(async () => (await storage.relay.depth(bobId)).depth === 0);
        } finally {
          await alice.close();
          await bob.close();
        }
      });

      await t.step("the witnesses lost nothing", async () => {
        await stillServed();
        assert.equal(witnessB.received.filter((f) => f.type === FrameType.Msg).length, 0);
      });
    } finally {
      for (const c of clients) await c.close();
      await server.stop();
      await close();
      logs.stop();
    }
  });
}

if (realServices() === null) {
  Deno.test({
    name: "relay end to end (Postgres + Redis)",
    ignore: true,
    fn() {},
  });
}
