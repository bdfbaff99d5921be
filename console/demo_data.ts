/**
 * Realistic demo data for screenshots and browser tests: users, devices in every state (with a
 * key rotation waiting), key events, sessions, groups with rosters, federation peers, outbox
 * entries with delivery errors, queued envelopes and operator audit entries.
 */
import type { Storage } from "../storage/types.ts";
import { randomBytes } from "node:crypto";

const key = () => new Uint8Array(randomBytes(32));

const PEOPLE: [string, string][] = [
  ["alice", "Alice Moreau"],
  ["bruno", "Bruno Keller"],
  ["chen", "Chen Wei"],
  ["dara", "Dara O'Neill"],
  ["emeka", "Emeka Obi"],
  ["farah", "Farah Haddad"],
  ["goran", "Goran Petrović"],
  ["hana", "Hana Sato"],
];

/** Seeds the demo data; returns the ids worth visiting. */
export async function seedDemo(storage: Storage, nodeId = "node-demo"): Promise<{
  activeDevice: string;
  pairedDevice: string;
  pendingDevice: string;
  group: string;
  member: string;
  dbPeer: string;
}> {
  const s = storage;
  const users = [];
  for (const [handle, name] of PEOPLE) {
    users.push(await s.users.create({ handle, displayName: name }));
  }
  const devices: string[] = [];
  for (const [i, u] of users.entries()) {
    for (const kind of ["laptop", "phone"]) {
      if (i >= 6 && kind === "phone") continue;
      const id = `${u.handle}-${kind}`;
      await s.devices.register(
        { id, userId: u.id, publicKey: key(), status: "active" },
        "handshake",
      );
      devices.push(id);
    }
  }
  // Waiting for approval: two new devices and one key rotation.
  for (const [handle, kind] of [["goran", "phone"], ["hana", "tablet"]]) {
    const u = users.find((x) => x.handle === handle)!;
    await s.devices.register(
      { id: `${handle}-${kind}`, userId: u.id, publicKey: key(), status: "pending" },
      "handshake",
    );
  }
  await s.devices.resolveForHandshake({
    deviceId: "chen-phone",
    publicKey: key(),
    user: { handle: "chen" },
    autoApprove: false,
  });
  // History: an approved, a rejected and a revoked device.
  const bruno = users[1];
  await s.devices.register(
    { id: "bruno-tablet", userId: bruno.id, publicKey: key(), status: "pending" },
    "handshake",
  );
  await s.devices.approve("bruno-tablet", "cli:ops");
  await s.devices.register(
    { id: "dara-old-phone", userId: users[3].id, publicKey: key(), status: "pending" },
    "handshake",
  );
  await s.devices.reject("dara-old-phone", "cli:ops");
  await s.devices.revoke("emeka-phone", "cli:ops");
  await s.devices.rotateKey("alice-laptop", key(), "cli:ops");
  // Pairing: alice's phone asked for codes; her tablet paired with one, a guess missed another.
  const alice = users.find((u) => u.handle === "alice")!;
  const { code } = await s.pairing.issue({
    userId: alice.id,
    deviceId: "alice-phone",
    ttlSeconds: 300,
    maxOpen: 3,
  });
  await s.pairing.issue({ userId: alice.id, deviceId: "alice-phone", ttlSeconds: 300, maxOpen: 3 });
  await s.devices.resolveForHandshake({
    deviceId: "alice-guess",
    publicKey: key(),
    user: { handle: "alice" },
    autoApprove: true,
    pairingCode: "0000-0000",
  }).catch(() => {}); // refused: counted as a wrong attempt on the open code
  await s.devices.resolveForHandshake({
    deviceId: "alice-tablet",
    publicKey: key(),
    user: { handle: "alice" },
    autoApprove: true,
    pairingCode: code,
  });
  // A third device paired, then unlinked by the phone (self-service); alice's own limit raised.
  const third = await s.pairing.issue({
    userId: alice.id,
    deviceId: "alice-phone",
    ttlSeconds: 300,
    maxOpen: 3,
  });
  await s.devices.resolveForHandshake({
    deviceId: "alice-old-laptop",
    publicKey: key(),
    user: { handle: "alice" },
    autoApprove: true,
    pairingCode: third.code,
  });
  await s.devices.revoke("alice-old-laptop", "device:alice-phone", {
    actor: "device:alice-phone",
    action: "device.unlink",
  });
  await s.pairing.setDeviceLimit(alice.id, 12, "cli:ops", {
    actor: "cli:ops",
    action: "user.device-limit",
  });

  const nodes = [nodeId, "node-b21c", "node-e904"];
  for (const [i, id] of devices.slice(0, 10).entries()) {
    const sessionId = crypto.randomUUID();
    // The first seven are online: their route names this session, on one of three nodes.
    if (i < 7) await s.ephemeral.setRoute(id, { nodeId: nodes[i % 3], sessionId }, 3600);
    await s.sessions.record({
      sessionId,
      userId: users[Math.floor(i / 2)].id,
      deviceId: id,
      pattern: i % 3 === 0 ? "IK" : "XK",
      protocolVersion: 2,
      remoteAddr: `198.51.100.${20 + i}`,
      nodeId: nodes[i % 3],
      ttlSeconds: 3600,
    });
    await s.devices.touch(id);
  }
  await s.relay.enqueue(
    Array.from({ length: 6 }, (_, i) => ({
      deviceId: i < 4 ? "alice-phone" : "farah-laptop",
      channelId: 7,
      payload: randomBytes(64),
    })),
    86_400,
  );

  const team = await s.groups.create(
    { id: "ops-team", ownerDeviceId: "alice-laptop", relay: true },
    "handshake",
  );
  for (
    const [id, role] of [["bruno-laptop", "admin"], ["chen-laptop", "member"], [
      "dara-laptop",
      "member",
    ], ["emeka-laptop", "member"]] as const
  ) {
    await s.groups.addMember(team.id, id, role, "handshake");
  }
  await s.groups.removeMember(team.id, "emeka-laptop", "handshake");
  const family = await s.groups.create(
    { id: "family", ownerDeviceId: "farah-laptop", relay: false },
    "handshake",
  );
  await s.groups.addMember(family.id, "farah-phone", "member", "handshake");
  await s.groups.addMember(family.id, "hana-laptop", "member", "handshake");

  await s.peers.upsert(
    {
      domain: "chat.partner.example",
      endpoint: "https://chat.partner.example/federation",
      publicKey: key(),
      status: "active",
    },
    "cli:ops",
  );
  await s.peers.upsert(
    {
      domain: "relay.lab.example",
      endpoint: "https://relay.lab.example/federation",
      publicKey: key(),
      status: "pending",
    },
    "cli:ops",
  );
  for (let i = 0; i < 3; i++) {
    const e = await s.outbox.enqueue({
      eventId: crypto.randomUUID(),
      peerDomain: "relay.lab.example",
      endpoint: "https://relay.lab.example/federation",
      body: { kind: "msg", n: i },
    });
    // Seven failures: the backoff's next retry is about two minutes away.
    for (let n = 0; n < 7; n++) {
      await s.outbox.markFailed(e.id, "connect ECONNREFUSED 203.0.113.7:443");
    }
  }
  await s.outbox.enqueue({
    eventId: crypto.randomUUID(),
    peerDomain: "chat.partner.example",
    endpoint: "https://chat.partner.example/federation",
    body: { kind: "msg" },
  });
  // Dead letters: events the peer kept refusing.
  for (const [i, why] of ["401 invalid signature", "400 unknown event kind"].entries()) {
    const e = await s.outbox.enqueue({
      eventId: crypto.randomUUID(),
      peerDomain: "chat.partner.example",
      endpoint: "https://chat.partner.example/federation",
      body: {
        event: {
          id: crypto.randomUUID(),
          kind: i === 0 ? "msg" : "typing",
          origin: "chat.commucat.example",
        },
        signature: randomBytes(64).toString("base64url"),
      },
    });
    for (let n = 0; n < 4; n++) await s.outbox.markFailed(e.id, `rejected: ${why}`);
    await s.outbox.markDead(e.id, `rejected: ${why}`);
  }
  // Three nodes of one cluster, as their heartbeats describe them.
  const started = Date.now();
  for (
    const [i, [node, address, hours, connections, fps]] of ([
      [nodeId, "tls://10.0.1.11:9443 https://10.0.1.11:8443", 74, 412, 1830],
      ["node-b21c", "tls://10.0.1.12:9443 https://10.0.1.12:8443", 74, 388, 1610],
      ["node-e904", "tls://10.0.1.13:9443 https://10.0.1.13:8443", 2, 97, 420],
    ] as const).entries()
  ) {
    await s.ephemeral.setNodeHeartbeat({
      nodeId: node,
      address,
      version: "commucat 0.9.0 (deno 2.9.6)",
      startedAt: new Date(started - hours * 3600_000 - i * 611_000).toISOString(),
      connections,
      framesPerSecond: fps,
      at: new Date(started).toISOString(),
    }, 3600);
  }

  await s.audit.append({
    actor: "cli:ops",
    action: "device.approve",
    target: "device:bruno-tablet",
    before: { status: "pending" },
    after: { status: "active" },
  });
  await s.audit.append({
    actor: "cli:ops",
    action: "device.revoke",
    target: "device:emeka-phone",
    before: { status: "active" },
    after: { status: "revoked" },
  });
  return {
    activeDevice: "alice-phone",
    pairedDevice: "alice-tablet",
    pendingDevice: "goran-phone",
    group: "ops-team",
    member: "chen-laptop",
    dbPeer: "relay.lab.example",
  };
}
