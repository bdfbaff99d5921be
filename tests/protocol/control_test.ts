import assert from "node:assert/strict";
import {
  bytesToHex,
  encodeControl,
  encodeFrame,
  FrameDecoder,
  FrameType,
  hexToBytes,
  isHex,
  negotiateVersion,
  parseAck,
  parseClientAuth,
  parseControlFrame,
  parseErrorPayload,
  parseGroupCreate,
  parseGroupEvent,
  parseGroupInvite,
  parseHello,
  parseJoin,
  parseLeave,
  parsePresence,
  parseServerAuth,
  parseTyping,
  ProtocolError,
} from "../../protocol/mod.ts";

const KEY = "0f".repeat(32);

function invalid(fn: () => unknown): ProtocolError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ProtocolError, `expected ProtocolError, got ${error}`);
    assert.equal(error.title, "Invalid Control Payload");
    assert.equal(error.status, 400);
    return error;
  }
  assert.fail("expected a ProtocolError");
}

const hello = (overrides: Record<string, unknown> = {}) => ({
  pattern: "XK",
  device_id: "dev-1",
  client_static: KEY,
  handshake: "abcdef01",
  ...overrides,
});

// --- HELLO ---------------------------------------------------------------------------

Deno.test("HELLO: a full payload parses into its typed form", () => {
  const parsed = parseHello(hello({
    pattern: "IK",
    client_static: KEY.toUpperCase(),
    supported_versions: [1, 2],
    user: { handle: "alice", display_name: "Alice", avatar_url: null },
    capabilities: ["noise", "zstd"],
    extra: "ignored",
  }));
  assert.deepEqual(parsed, {
    pattern: "IK",
    device_id: "dev-1",
    client_static: KEY,
    handshake: "abcdef01",
    supported_versions: [1, 2],
    user: { handle: "alice", display_name: "Alice" },
    capabilities: ["noise", "zstd"],
  });
});

Deno.test("HELLO: versions default to [1]; protocol_version alone is used", () => {
  assert.deepEqual(parseHello(hello()).supported_versions, [1]);
  const v2 = parseHello(hello({ protocol_version: 2 }));
  assert.deepEqual(v2.supported_versions, [2]);
  assert.equal(v2.protocol_version, 2);
});

Deno.test("HELLO: each wrong field is named in the detail", () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ pattern: "XX" }, "HELLO.pattern"],
    [{ device_id: "" }, "HELLO.device_id"],
    [{ device_id: "x".repeat(129) }, "HELLO.device_id"],
    [{ device_id: "bad id" }, "HELLO.device_id"],
    [{ device_id: "__proto__" }, "HELLO.device_id"],
    [{ device_id: 5 }, "HELLO.device_id"],
    [{ client_static: "ab".repeat(31) }, "HELLO.client_static: expected 64 hex characters"],
    [{ client_static: "zz".repeat(32) }, "HELLO.client_static: expected 64 hex characters"],
    [{ handshake: "abc" }, "HELLO.handshake"],
    [{ handshake: "" }, "HELLO.handshake"],
    [{ supported_versions: [] }, "HELLO.supported_versions"],
    [{ supported_versions: [1, "2"] }, "HELLO.supported_versions[1]"],
    [{ protocol_version: 1.5 }, "HELLO.protocol_version"],
    [{ user: "alice" }, "HELLO.user"],
    [{ user: { handle: 7 } }, "HELLO.user.handle"],
    [{ capabilities: "noise" }, "HELLO.capabilities"],
    [{ capabilities: ["ok", ""] }, "HELLO.capabilities[1]"],
  ];
  for (const [override, expected] of cases) {
    const err = invalid(() => parseHello(hello(override)));
    assert.ok(err.detail.startsWith(expected), `${err.detail} should start with ${expected}`);
    assert.equal(err.fatal, true);
  }
  assert.match(invalid(() => parseHello([])).detail, /^HELLO: expected a JSON object/);
  assert.match(invalid(() => parseHello(null)).detail, /^HELLO: expected a JSON object/);
});

Deno.test("parsers: fatality is the caller's choice", () => {
  assert.equal(invalid(() => parseJoin({}, { fatal: false })).fatal, false);
  assert.equal(invalid(() => parseJoin({})).fatal, true);
  assert.deepEqual(invalid(() => parseJoin({}, { fatal: false })).toProblem(4), {
    type: "about:blank",
    title: "Invalid Control Payload",
    status: 400,
    detail: invalid(() => parseJoin({})).detail,
    fatal: false,
    sequence: 4,
  });
});

// --- AUTH ----------------------------------------------------------------------------

Deno.test("AUTH: server and client forms", () => {
  const server = {
    session: "sess-1",
    handshake: "00AA",
    server_static: KEY,
    protocol_version: 2,
    supported_versions: [1, 2],
    user: { id: "u1", handle: "alice", display_name: null },
  };
  assert.deepEqual(parseServerAuth(server), {
    ...server,
    handshake: "00aa",
    user: { id: "u1", handle: "alice", display_name: null, avatar_url: null },
  });
  assert.match(
    invalid(() => parseServerAuth({ ...server, server_static: "00" })).detail,
    /^AUTH\.server_static/,
  );
  assert.match(invalid(() => parseServerAuth({ ...server, user: {} })).detail, /^AUTH\.user\.id/);
  assert.deepEqual(parseClientAuth({ handshake: "ff00" }), { handshake: "ff00" });
  assert.match(invalid(() => parseClientAuth({ handshake: 1 })).detail, /^AUTH\.handshake/);
});

// --- JOIN / LEAVE / ACK --------------------------------------------------------------

Deno.test("JOIN: members, relay default, group_id", () => {
  assert.deepEqual(parseJoin({ members: ["a", "b@remote.example", "a"], relay: false }), {
    members: ["a", "b@remote.example"],
    relay: false,
  });
  assert.deepEqual(parseJoin({ group_id: "g1" }), { members: [], relay: true, group_id: "g1" });
  assert.match(invalid(() => parseJoin({ members: [] })).detail, /^JOIN\.members/);
  assert.match(invalid(() => parseJoin({ members: ["ok", 3] })).detail, /^JOIN\.members\[1\]/);
  assert.match(invalid(() => parseJoin({ members: ["a"], relay: "yes" })).detail, /^JOIN\.relay/);
  assert.match(
    invalid(() => parseJoin({ members: ["a"], group_id: "" })).detail,
    /^JOIN\.group_id/,
  );
});

Deno.test("LEAVE and ACK", () => {
  assert.deepEqual(parseLeave({}), {});
  assert.deepEqual(parseLeave({ reason: "bye" }), { reason: "bye" });
  assert.deepEqual(parseAck({ ack: 5, group_id: "g", device: "d", junk: 1 }), {
    ack: 5,
    group_id: "g",
    device: "d",
  });
  assert.match(invalid(() => parseAck({ ack: -1 })).detail, /^ACK\.ack/);
  assert.match(invalid(() => parseAck({})).detail, /^ACK\.ack/);
  const done = parseAck({ handshake: "ok", session: "s1", user: { id: "u", handle: "h" } });
  assert.ok("handshake" in done);
  assert.deepEqual(done, {
    handshake: "ok",
    session: "s1",
    user: { id: "u", handle: "h", display_name: null, avatar_url: null },
  });
  assert.match(invalid(() => parseAck({ handshake: "no" })).detail, /^ACK\.handshake/);
});

// --- PRESENCE / groups / opaque-JSON types -------------------------------------------

Deno.test("PRESENCE: a state, or a peer with a candidate", () => {
  assert.deepEqual(parsePresence({ state: "online" }), { state: "online" });
  assert.deepEqual(parsePresence({ channel: 3, peer: "dev-2", candidate: "10.0.0.1:5000" }), {
    channel: 3,
    peer: "dev-2",
    candidate: "10.0.0.1:5000",
  });
  assert.match(invalid(() => parsePresence({})).detail, /^PRESENCE\.state/);
  assert.match(invalid(() => parsePresence({ state: "<b>" })).detail, /^PRESENCE\.state/);
  assert.match(invalid(() => parsePresence({ state: "x", channel: "1" })).detail, /channel/);
});

Deno.test("GROUP_CREATE: roles are member or admin; hostile keys are refused", () => {
  const parsed = parseGroupCreate({
    group_id: "g1",
    members: ["a", "b", "c"],
    roles: { a: "admin", b: "owner", c: "weird" },
    relay: false,
  });
  assert.deepEqual(parsed, {
    group_id: "g1",
    members: ["a", "b", "c"],
    roles: { a: "admin", b: "member", c: "member" },
    relay: false,
  });
  assert.deepEqual(parseGroupCreate({ members: [] }), { members: [], roles: {}, relay: true });
  const hostile = JSON.parse('{"members":["a"],"roles":{"__proto__":"admin"}}');
  assert.match(invalid(() => parseGroupCreate(hostile)).detail, /^GROUP_CREATE\.roles/);
  assert.match(
    invalid(() => parseGroupCreate({ members: ["a"], roles: { a: 1 } })).detail,
    /^GROUP_CREATE\.roles\.a/,
  );
  assert.equal(({} as Record<string, unknown>).admin, undefined);
});

Deno.test("GROUP_INVITE: role as asked, unknown becomes member", () => {
  assert.deepEqual(parseGroupInvite({ group_id: "g", device: "d", role: "owner" }), {
    group_id: "g",
    device: "d",
    role: "owner",
  });
  assert.equal(parseGroupInvite({ group_id: "g", device: "d" }).role, "member");
  assert.equal(parseGroupInvite({ group_id: "g", device: "d", role: "boss" }).role, "member");
  assert.match(invalid(() => parseGroupInvite({ device: "d" })).detail, /^GROUP_INVITE\.group_id/);
  assert.match(
    invalid(() => parseGroupInvite({ group_id: "g", device: "d", role: 1 })).detail,
    /role/,
  );
});

Deno.test("TYPING and GROUP_EVENT take any JSON object", () => {
  assert.deepEqual(parseTyping({ hint: "abc" }), { hint: "abc" });
  assert.deepEqual(parseGroupEvent({ ciphertext: "00" }), { ciphertext: "00" });
  assert.match(invalid(() => parseTyping("x")).detail, /^TYPING: expected a JSON object/);
  assert.match(invalid(() => parseGroupEvent([1])).detail, /^GROUP_EVENT/);
});

Deno.test("ERROR: problems parse with defaults", () => {
  assert.deepEqual(parseErrorPayload({ title: "Device Revoked", status: 403 }), {
    type: "about:blank",
    title: "Device Revoked",
    status: 403,
    detail: "",
    fatal: true,
  });
  const full = {
    type: "about:blank",
    title: "rate limited",
    status: 429,
    detail: "slow down",
    fatal: false,
    sequence: 9,
  };
  assert.deepEqual(parseErrorPayload(full), full);
  assert.match(invalid(() => parseErrorPayload({ title: "x", status: 99 })).detail, /status/);
  assert.match(invalid(() => parseErrorPayload({ status: 400 })).detail, /^ERROR\.title/);
});

Deno.test("prototype pollution: __proto__ keys anywhere change nothing", () => {
  const json = '{"__proto__":{"polluted":true},"pattern":"XK","device_id":"d",' +
    `"client_static":"${KEY}","handshake":"00","user":{"__proto__":{"polluted":true}}}`;
  const parsed = parseHello(JSON.parse(json));
  assert.equal(Object.getPrototypeOf(parsed), Object.prototype);
  assert.equal(Object.getPrototypeOf(parsed.user), Object.prototype);
  assert.equal((parsed as unknown as Record<string, unknown>).polluted, undefined);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  // Inherited names are not fields.
  assert.match(invalid(() => parseAck(JSON.parse('{"__proto__":{"ack":1}}'))).detail, /ACK\.ack/);
});

// --- dispatch, versions, hex -------------------------------------------------------------

Deno.test("parseControlFrame dispatches decoded frames by type", () => {
  const decoder = new FrameDecoder();
  decoder.push(encodeControl(FrameType.Join, 1, 1, { members: ["x"] }));
  decoder.push(encodeControl(FrameType.Auth, 0, 2, { handshake: "00" }));
  decoder.push(
    encodeFrame({ type: FrameType.Msg, channel: 1, sequence: 3, payload: new Uint8Array(1) }),
  );
  const join = parseControlFrame(decoder.next()!);
  assert.equal(join.type, FrameType.Join);
  assert.deepEqual(join.value, { members: ["x"], relay: true });
  assert.deepEqual(parseControlFrame(decoder.next()!).value, { handshake: "00" });
  invalid(() => parseControlFrame(decoder.next()!));
});

Deno.test("negotiateVersion picks the highest common version", () => {
  assert.equal(negotiateVersion([1, 2]), 2);
  assert.equal(negotiateVersion([1]), 1);
  assert.equal(negotiateVersion([3, 4]), null);
  assert.equal(negotiateVersion([2, 1], [1]), 1);
});

Deno.test("hex helpers validate", () => {
  assert.equal(bytesToHex(Uint8Array.from([0, 15, 255])), "000fff");
  assert.deepEqual([...hexToBytes("000FfF")], [0, 15, 255]);
  assert.throws(() => hexToBytes("abc"), RangeError);
  assert.throws(() => hexToBytes("zz"), RangeError);
  assert.throws(() => hexToBytes("0g"), RangeError);
  assert.throws(() => hexToBytes("00", 2), /expected 4 hex characters/);
  assert.equal(isHex(KEY, 32), true);
  assert.equal(isHex(KEY, 31), false);
  assert.equal(isHex("0g"), false);
  assert.equal(isHex(5), false);
});
