import assert from "node:assert/strict";
import { encodeControl, encodeFrame, FrameType } from "../../protocol/frame.ts";
import {
  type FederationEvent,
  federationKeypair,
  signEvent,
  toRfc3339,
} from "../../protocol/federation.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { NotFound } from "../../storage/errors.ts";
import {
  FederationRefused,
  inboundUrl,
  MAX_EVENT_BODY,
  MAX_FEDERATED_FRAME,
  MemoryReplayGuard,
  remoteDomainOf,
  REPLAY_WINDOW_MS,
  ReplayGuardFull,
} from "../../server/federation/mod.ts";
import { classify } from "../../server/federation/outbound.ts";
import { freePort, makeDomain, newIdentity, type TestDomain, waitFor } from "./federation_fakes.ts";

const msg = (text: string, channel = 7, sequence = 1) =>
  encodeFrame({
    type: FrameType.Msg,
    channel,
    sequence,
    payload: new TextEncoder().encode(text),
  });

/** a.test and b.test paired through static config, both listening on loopback. */
function pair(): { a: TestDomain; b: TestDomain; close: () => Promise<void> } {
  const ia = newIdentity("a.test"), ib = newIdentity("b.test");
  const pa = freePort(), pb = freePort();
  const a = makeDomain(ia, [{
    domain: "b.test",
    endpoint: `http://127.0.0.1:${pb}/federation/events`,
    publicKey: ib.publicKey,
  }]);
  // b names a by its base URL: the inbound path is appended.
  const b = makeDomain(ib, [{
    domain: "a.test",
    endpoint: `http://127.0.0.1:${pa}`,
    publicKey: ia.publicKey,
  }]);
  a.listen(pa);
  b.listen(pb);
  return { a, b, close: async () => void await Promise.all([a.close(), b.close()]) };
}

/** Takes b.test's listener down, then queues one MSG from a's alice for bob@b.test. */
async function sendWhileDown(a: TestDomain, b: TestDomain, text: string): Promise<void> {
  await b.server!.shutdown();
  b.server = null;
  await a.fed.send({
    channel: 1,
    sequence: 1,
    frame: msg(text),
    sender: "alice",
    target: "bob@b.test",
  });
}

/**
 * A third domain, c.test, that knows a.test statically while a.test has it in its database as
 * pending; then one MSG from a's alice queued for carol@c.test.
 */
async function pendingPeerWithTraffic(a: TestDomain, text: string): Promise<TestDomain> {
  const c = makeDomain(newIdentity("c.test"), [{
    domain: "a.test",
    endpoint: a.url,
    publicKey: a.publicKey,
  }]);
  c.listen();
  try {
    await a.peers.upsert({
      domain: "c.test",
      endpoint: c.url,
      publicKey: c.publicKey,
      status: "pending",
    });
    await a.fed.send({
      channel: 3,
      sequence: 1,
      frame: msg(text),
      sender: "alice",
      target: "carol@c.test",
    });
    return c;
  } catch (err) {
    await c.close();
    throw err;
  }
}

/** A correctly signed body from `from` (seed) to `to`, with overrides applied before signing. */
function signedBody(
  seed: Uint8Array,
  over: Partial<Omit<FederationEvent, "payload">> & {
    payload?: Partial<FederationEvent["payload"]>;
  } = {},
  now = new Date(),
): { event: FederationEvent; signature: string } {
  const event: FederationEvent = {
    event_id: crypto.randomUUID(),
    origin: "a.test",
    scope: "b.test",
    created_at: toRfc3339(now),
    ...over,
    payload: {
      channel: 7,
      sequence: 1,
      payload: bytesToHex(msg("hello")),
      sender: "alice@a.test",
      target: "bob@b.test",
      ...over.payload,
    },
  };
  const signature = bytesToHex(signEvent(event, federationKeypair(seed).secretKey));
  return { event, signature };
}

function post(body: unknown, headers: Record<string, string> = {}): Request {
  return new Request("http://b.test/federation/events", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function problem(
  res: Response,
): Promise<{ title: string; status: number; detail: string; field?: string }> {
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  return await res.json();
}

/** b.test alone (no listener) with a.test as a static peer; for inbound checks. */
function receiver(): { a: ReturnType<typeof newIdentity>; b: TestDomain } {
  const a = newIdentity("a.test");
  const b = makeDomain(newIdentity("b.test"), [{
    domain: "a.test",
    endpoint: "http://127.0.0.1:9/federation/events",
    publicKey: a.publicKey,
  }]);
  return { a, b };
}

Deno.test("a frame sent from a.test arrives on b.test with its sender and bytes", async () => {
  const { a, b, close } = pair();
  try {
    a.fed.start();
    b.fed.start();
    assert.equal(remoteDomainOf("bob@b.test", "a.test"), "b.test");
    assert.equal(remoteDomainOf("bob@A.TEST", "a.test"), null);
    assert.equal(remoteDomainOf("bob", "a.test"), null);
    const frame = msg("hi bob", 42, 9);
    const { eventId } = await a.fed.send({
      channel: 42,
      sequence: 9,
      frame,
      sender: "alice",
      target: "bob@b.test",
    });
    await waitFor(() => b.delivered.length === 1, "delivery on b.test");
    assert.equal(b.delivered[0].device, "bob");
    assert.deepEqual(b.delivered[0].frame, frame);
    assert.deepEqual(b.delivered[0].meta, {
      origin: "a.test",
      sender: "alice@a.test",
      channel: 42,
      // Kept with the queued copy: the recipient's ACK is reported back by it.
      eventId,
    });
    await waitFor(() => a.outbox.entries[0].deliveredAt !== null, "outbox marked delivered");
    assert.equal(a.outbox.entries[0].eventId, eventId);
    assert.ok(
      a.log.lines.some((l) => l.msg === "federation event queued" && l.fields.event_id === eventId),
    );
    assert.ok(b.log.lines.some((l) => l.msg === "federation event accepted"));
    assert.deepEqual(b.peers.touched, ["a.test"]);

    // And back: b answers a.
    await b.fed.send({
      channel: 42,
      sequence: 1,
      frame: msg("hi alice"),
      sender: "bob@b.test",
      target: "alice@a.test",
    });
    await waitFor(() => a.delivered.length === 1, "delivery on a.test");
    assert.equal(a.delivered[0].meta.sender, "bob@b.test");
  } finally {
    await close();
  }
});

Deno.test("a peer that is down is retried with backoff and gets the event when it comes up", async () => {
  const { a, b, close } = pair();
  try {
    await sendWhileDown(a, b, "later");
    assert.equal(await a.fed.deliverDue(), 1);
    const entry = a.outbox.entries[0];
    assert.equal(entry.attempts, 1);
    assert.match(entry.lastError ?? "", /^network: /);
    assert.ok(a.log.lines.some((l) => l.msg === "federation delivery failed"));
    // Not due until the backoff (2 s after one failure) has passed.
    assert.equal(await a.fed.deliverDue(), 0);
    b.listen(Number(new URL(a.outbox.entries[0].endpoint).port));
    a.clock.advance(2_000);
    assert.equal(await a.fed.deliverDue(), 1);
    assert.notEqual(entry.deliveredAt, null);
    assert.equal(b.delivered.length, 1);
    assert.equal(new TextDecoder().decode(b.delivered[0].frame.subarray(-5)), "later");
  } finally {
    await close();
  }
});

Deno.test("an event retried hours later is re-stamped and still passes the skew check", async () => {
  const { a, b, close } = pair();
  try {
    await sendWhileDown(a, b, "old");
    await a.fed.deliverDue();
    b.listen(Number(new URL(a.outbox.entries[0].endpoint).port));
    // Both clocks move on together: the queued event is three hours old.
    a.clock.advance(3 * 3600_000);
    b.clock.advance(3 * 3600_000);
    await a.fed.deliverDue();
    assert.equal(b.delivered.length, 1);
  } finally {
    await close();
  }
});

Deno.test("a pending peer becomes active when traffic for it is queued", async () => {
  const { a, b, close } = pair();
  try {
    // c.test is known only from the database, pending.
    const c = await pendingPeerWithTraffic(a, "hey c");
    try {
      assert.equal((await a.peers.get("c.test"))?.status, "active");
      assert.ok(a.log.lines.some((l) => l.msg === "federation peer activated"));
      await a.fed.deliverDue();
      assert.equal(c.delivered.length, 1);
      assert.equal(c.delivered[0].device, "carol");
    } finally {
      await c.close();
    }
    void b;
  } finally {
    await close();
  }
});

Deno.test("blocked and unknown peers are refused outbound with a non-fatal 403", async () => {
  const { a, close } = pair();
  try {
    await a.peers.upsert({
      domain: "c.test",
      endpoint: "https://c.test/",
      publicKey: new Uint8Array(32),
      status: "blocked",
    });
    for (const target of ["carol@c.test", "dave@unknown.test"]) {
      const err = await a.fed.send({
        channel: 1,
        sequence: 1,
        frame: msg("x"),
        sender: "alice",
        target,
      })
        .then(() => null, (e) => e);
      assert.ok(err instanceof FederationRefused, `${target}: ${err}`);
      assert.equal(err.title, "federation peer not allowed");
      assert.equal(err.status, 403);
      assert.equal(err.fatal, false);
    }
    assert.equal(a.outbox.entries.length, 0);
    assert.equal(a.log.lines.filter((l) => l.msg === "federation peer not allowed").length, 2);
  } finally {
    await close();
  }
});

Deno.test("a blocked origin is refused inbound, and the sender keeps the event queued", async () => {
  const ia = newIdentity("a.test"), ib = newIdentity("b.test");
  const pb = freePort();
  const a = makeDomain(ia, [{
    domain: "b.test",
    endpoint: `http://127.0.0.1:${pb}`,
    publicKey: ib.publicKey,
  }]);
  const b = makeDomain(ib, []);
  await b.peers.upsert({
    domain: "a.test",
    endpoint: "http://127.0.0.1:9/",
    publicKey: ia.publicKey,
    status: "blocked",
  });
  b.listen(pb);
  try {
    await a.fed.send({
      channel: 1,
      sequence: 1,
      frame: msg("x"),
      sender: "alice",
      target: "bob@b.test",
    });
    await a.fed.deliverDue();
    assert.equal(b.delivered.length, 0);
    assert.match(a.outbox.entries[0].lastError ?? "", /HTTP 403 federation peer not allowed/);
    assert.ok(
      b.log.lines.some((l) => l.msg === "federation peer not allowed" && l.level === "warn"),
    );
    // Pending is not enough inbound either.
    await b.peers.setStatus("a.test", "pending");
    a.clock.advance(2_000);
    await a.fed.deliverDue();
    assert.equal(b.delivered.length, 0);
    // Once b's operator activates a.test, the retry goes through.
    await b.peers.setStatus("a.test", "active");
    a.clock.advance(4_000);
    await a.fed.deliverDue();
    assert.equal(b.delivered.length, 1);
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("inbound: unknown origin, forged signature, tampered payload, wrong scope", async () => {
  const { a, b } = receiver();
  // Unknown origin.
  const z = newIdentity("z.test");
  let res = await b.fed.handleInbound(
    post(signedBody(z.seed, { origin: "z.test", payload: { sender: "zed@z.test" } })),
  );
  assert.equal(res.status, 403);
  assert.equal((await problem(res)).title, "federation peer not allowed");
  // Forged: a.test's origin, someone else's key.
  res = await b.fed.handleInbound(post(signedBody(z.seed)));
  assert.equal(res.status, 401);
  assert.equal((await problem(res)).title, "invalid signature");
  // Tampered after signing.
  const tampered = signedBody(a.seed);
  tampered.event.payload.payload = bytesToHex(msg("HELLO"));
  res = await b.fed.handleInbound(post(tampered));
  assert.equal(res.status, 401);
  const tamperedTarget = signedBody(a.seed);
  tamperedTarget.event.payload.target = "mallory@b.test";
  assert.equal((await b.fed.handleInbound(post(tamperedTarget))).status, 401);
  // A digest that does not match.
  const badDigest = { ...signedBody(a.seed), digest: "00".repeat(32) };
  res = await b.fed.handleInbound(post(badDigest));
  assert.equal(res.status, 401);
  assert.equal((await problem(res)).field, "digest");
  // Meant for another domain.
  res = await b.fed.handleInbound(post(signedBody(a.seed, { scope: "c.test" })));
  assert.equal(res.status, 421);
  assert.equal((await problem(res)).title, "misdirected event");
  assert.equal(b.delivered.length, 0);
  await b.close();
});

Deno.test("inbound: a replayed event is refused, and the sender counts 409 as delivered", async () => {
  const { a, b } = receiver();
  const body = signedBody(a.seed);
  let res = await b.fed.handleInbound(post(body));
  assert.equal(res.status, 202);
  assert.deepEqual(await res.json(), { accepted: body.event.event_id });
  res = await b.fed.handleInbound(post(body));
  assert.equal(res.status, 409);
  const p = await problem(res);
  assert.equal(p.title, "replayed event");
  assert.equal(b.delivered.length, 1);
  assert.equal(classify(409, JSON.stringify(p)).kind, "delivered");
  assert.equal(classify(409, "{}").kind, "failed");
  await b.close();
});

Deno.test("inbound: created_at more than 5 minutes off is refused as clock skew", async () => {
  const { a, b } = receiver();
  for (const offset of [-10 * 60_000, 10 * 60_000]) {
    const res = await b.fed.handleInbound(
      post(signedBody(a.seed, {}, new Date(Date.now() + offset))),
    );
    assert.equal(res.status, 400);
    const p = await problem(res);
    assert.equal(p.title, "clock skew");
    assert.equal(p.field, "event.created_at");
  }
  // Within the window is fine.
  const res = await b.fed.handleInbound(
    post(signedBody(a.seed, {}, new Date(Date.now() - 4 * 60_000))),
  );
  assert.equal(res.status, 202);
  await b.close();
});

Deno.test("inbound: oversized bodies are refused before they are read whole", async () => {
  const { b } = receiver();
  let res = await b.fed.handleInbound(post("{}", { "content-length": String(MAX_EVENT_BODY + 1) }));
  assert.equal(res.status, 413);
  // No declared length: counted while streaming.
  const chunk = new Uint8Array(256 * 1024).fill(0x20);
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent > MAX_EVENT_BODY + chunk.length) return c.close();
      sent += chunk.length;
      c.enqueue(chunk);
    },
  });
  res = await b.fed.handleInbound(
    new Request("http://b.test/federation/events", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: stream,
    }),
  );
  assert.equal(res.status, 413);
  assert.equal((await problem(res)).title, "event too large");
  assert.ok(sent < MAX_EVENT_BODY + 2 * chunk.length);
  await b.close();
});

Deno.test("inbound: hostile JSON is refused with a problem naming the field", async () => {
  const { a, b } = receiver();
  const good = signedBody(a.seed);
  const cases: [string, unknown, string | undefined][] = [
    ["not JSON", "{event:", undefined],
    ["array", [], ""],
    ["missing event", { signature: good.signature }, "event"],
    ["missing signature", { event: good.event }, "signature"],
    [
      "__proto__",
      `{"__proto__":{"x":1},"event":${JSON.stringify(good.event)},"signature":"${good.signature}"}`,
      "__proto__",
    ],
    ["extra key", { ...good, extra: 1 }, "extra"],
    ["event not object", { ...good, event: "x" }, "event"],
    ["channel as string", {
      ...good,
      event: { ...good.event, payload: { ...good.event.payload, channel: "7" } },
    }, "event.payload.channel"],
    ["negative sequence", {
      ...good,
      event: { ...good.event, payload: { ...good.event.payload, sequence: -1 } },
    }, "event.payload.sequence"],
    ["fractional channel", {
      ...good,
      event: { ...good.event, payload: { ...good.event.payload, channel: 1.5 } },
    }, "event.payload.channel"],
    ["odd hex", {
      ...good,
      event: { ...good.event, payload: { ...good.event.payload, payload: "abc" } },
    }, "event.payload.payload"],
    ["missing target", {
      ...good,
      event: { ...good.event, payload: { ...good.event.payload, target: undefined } },
    }, "event.payload.target"],
    [
      "nested __proto__",
      `{"event":{"event_id":"x","origin":"a.test","scope":"b.test","created_at":"2024-01-01T00:00:00Z","payload":{"__proto__":null}},"signature":"${good.signature}"}`,
      "event.payload.__proto__",
    ],
    ["bad event id", { ...good, event: { ...good.event, event_id: "a b" } }, "event.event_id"],
    ["upper-case origin", { ...good, event: { ...good.event, origin: "A.TEST" } }, "event.origin"],
    ["short signature", { ...good, signature: "ab" }, "signature"],
    [
      "bad timestamp",
      { ...good, event: { ...good.event, created_at: "yesterday" } },
      "event.created_at",
    ],
    ["null", null, ""],
  ];
  for (const [name, body, field] of cases) {
    const res = await b.fed.handleInbound(post(body));
    assert.equal(res.status, 400, name);
    const p = await problem(res);
    assert.equal(p.title, "invalid event", name);
    assert.equal(p.field, field, name);
  }
  assert.equal(b.delivered.length, 0);
  assert.equal(({} as Record<string, unknown>).x, undefined);
  await b.close();
});

Deno.test("inbound: frames, senders and targets are checked after the signature", async () => {
  const { a, b } = receiver();
  const cases: [string, Parameters<typeof signedBody>[1], number, string][] = [
    ["garbage frame", { payload: { payload: "ffffffff" } }, 400, "invalid frame"],
    [
      "two frames",
      { payload: { payload: bytesToHex(msg("1")) + bytesToHex(msg("2")) } },
      400,
      "invalid frame",
    ],
    [
      "presence frame",
      {
        payload: {
          payload: bytesToHex(encodeControl(FrameType.Presence, 1, 1, { state: "online" })),
        },
      },
      400,
      "invalid frame",
    ],
    [
      "sender of another domain",
      { payload: { sender: "eve@c.test" } },
      403,
      "invalid federation sender",
    ],
    [
      "target of another domain",
      { payload: { target: "bob@c.test" } },
      400,
      "invalid federation target",
    ],
  ];
  for (const [name, over, status, title] of cases) {
    const res = await b.fed.handleInbound(post(signedBody(a.seed, over)));
    assert.equal(res.status, status, name);
    assert.equal((await problem(res)).title, title, name);
  }
  // A bare local device id is a valid target too.
  assert.equal(
    (await b.fed.handleInbound(post(signedBody(a.seed, { payload: { target: "bob" } })))).status,
    202,
  );
  assert.equal(b.delivered.length, 1);
  await b.close();
});

Deno.test("inbound: a failed local delivery answers 503 and the retry is accepted", async () => {
  const { a, b } = receiver();
  const body = signedBody(a.seed);
  b.deliverLocal = () => Promise.reject(new Error("storage failure"));
  let res = await b.fed.handleInbound(post(body));
  assert.equal(res.status, 503);
  assert.equal((await problem(res)).title, "delivery failed");
  b.deliverLocal = (device, frame, meta) => {
    b.delivered.push({ device, frame, meta });
    return Promise.resolve();
  };
  res = await b.fed.handleInbound(post(body));
  assert.equal(res.status, 202);
  await res.body?.cancel();
  // A refusal with a status (e.g. an unknown device) passes through.
  b.deliverLocal = () => Promise.reject(new NotFound("device", "bob"));
  res = await b.fed.handleInbound(post(signedBody(a.seed)));
  assert.equal(res.status, 404);
  const notFound = await problem(res);
  assert.equal(notFound.title, "Not Found");
  assert.equal(notFound.detail, 'device "bob" not found');
  await b.close();
});

Deno.test("inbound: method and content type are checked", async () => {
  const { b } = receiver();
  let res = await b.fed.handleInbound(new Request("http://b.test/federation/events"));
  assert.equal(res.status, 405);
  assert.equal(res.headers.get("allow"), "POST");
  await res.body?.cancel();
  res = await b.fed.handleInbound(post("{}", { "content-type": "text/plain" }));
  assert.equal(res.status, 415);
  await res.body?.cancel();
  res = await b.fed.handleInbound(
    post(`{"a":"\u00ff"}`, { "content-type": "application/json; charset=utf-8" }),
  );
  assert.equal(res.status, 400);
  await res.body?.cancel();
  await b.close();
});

Deno.test("send: targets, senders and frames are validated before anything is queued", async () => {
  const { a, close } = pair();
  try {
    const base = {
      channel: 1,
      sequence: 1,
      frame: msg("x"),
      sender: "alice",
      target: "bob@b.test",
    };
    const refusals: [Partial<typeof base>, number, string][] = [
      [{ target: "bob" }, 400, "invalid federation target"],
      [{ target: "bob@a.test" }, 400, "invalid federation target"],
      [{ sender: "alice@c.test" }, 400, "invalid federation sender"],
      [{ frame: new Uint8Array([1, 2, 3]) }, 400, "invalid frame"],
      [{ frame: encodeControl(FrameType.Join, 1, 1, { members: [] }) }, 400, "invalid frame"],
      [{ frame: msg("y".repeat(MAX_FEDERATED_FRAME)) }, 413, "federation frame too large"],
      [{ channel: -1 }, 400, "invalid frame"],
    ];
    for (const [over, status, title] of refusals) {
      const err = await a.fed.send({ ...base, ...over }).then(() => null, (e) => e);
      assert.ok(err instanceof FederationRefused, JSON.stringify(Object.keys(over)));
      assert.equal(err.status, status);
      assert.equal(err.title, title);
    }
    assert.equal(a.outbox.entries.length, 0);
    // Sender given qualified with our own domain is fine.
    await a.fed.send({ ...base, sender: "alice@a.test" });
    assert.equal(a.outbox.entries.length, 1);
  } finally {
    await close();
  }
});

Deno.test("the worker starts and stops cleanly, aborting a hung request", async () => {
  const ib = newIdentity("b.test");
  // A peer that accepts the request and does not answer until the test lets it.
  let release = () => {};
  const gate = new Promise<void>((r) => (release = r));
  let seen = 0;
  const hung = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    seen++;
    await req.body?.cancel();
    await gate;
    return new Response(null, { status: 503 });
  });
  const a = makeDomain(newIdentity("a.test"), [{
    domain: "b.test",
    endpoint: `http://127.0.0.1:${hung.addr.port}/`,
    publicKey: ib.publicKey,
  }]);
  try {
    a.fed.start();
    await a.fed.send({
      channel: 1,
      sequence: 1,
      frame: msg("x"),
      sender: "alice",
      target: "bob@b.test",
    });
    await waitFor(() => seen === 1, "the request to reach the peer");
    await a.fed.stop();
    const entry = a.outbox.entries[0];
    assert.equal(entry.deliveredAt, null);
    assert.equal(entry.attempts, 1);
    assert.equal(entry.lastError, "network: federation worker stopping");
  } finally {
    release();
    await a.close();
    await hung.shutdown();
  }
});

Deno.test("inboundUrl completes a base URL and keeps any other path", () => {
  assert.equal(
    inboundUrl("https://chat.example.org"),
    "https://chat.example.org/federation/events",
  );
  assert.equal(
    inboundUrl("https://chat.example.org/"),
    "https://chat.example.org/federation/events",
  );
  assert.equal(
    inboundUrl("https://chat.example.org/federation/events"),
    "https://chat.example.org/federation/events",
  );
  assert.equal(inboundUrl("https://proxy.example.org/fed/in"), "https://proxy.example.org/fed/in");
  assert.equal(
    inboundUrl("https://chat.example.org/federation"),
    "https://chat.example.org/federation/events",
  );
  assert.equal(
    inboundUrl("https://chat.example.org:8443/federation/"),
    "https://chat.example.org:8443/federation/events",
  );
});

Deno.test("the in-memory replay guard forgets ids after the window and never early", async () => {
  const guard = new MemoryReplayGuard(2);
  const t0 = new Date(0);
  assert.equal(await guard.claim("a.test", "1", t0), true);
  assert.equal(await guard.claim("a.test", "1", t0), false);
  assert.equal(await guard.claim("c.test", "1", t0), true, "ids are scoped by origin");
  await assert.rejects(guard.claim("a.test", "2", t0), ReplayGuardFull);
  const later = new Date(REPLAY_WINDOW_MS + 1);
  assert.equal(await guard.claim("a.test", "2", later), true);
  assert.equal(guard.size, 1);
  await guard.release("a.test", "2");
  assert.equal(await guard.claim("a.test", "2", later), true);
});

Deno.test("queued events wait, without promoting it again, for a peer sent back to pending", async () => {
  const { a, b, close } = pair();
  try {
    const c = await pendingPeerWithTraffic(a, "x");
    try {
      await a.peers.setStatus("c.test", "pending");
      await a.fed.deliverDue();
      assert.equal(c.delivered.length, 0);
      assert.equal((await a.peers.get("c.test"))?.status, "pending");
      assert.match(a.outbox.entries[0].lastError ?? "", /federation peer not allowed/);
    } finally {
      await c.close();
    }
    void b;
  } finally {
    await close();
  }
});
