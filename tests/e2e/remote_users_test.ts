/**
 * Remote users across domains: alice@a.test JOINs naming `@<bob>@b.test`; a.test asks b.test
 * for bob's active devices with a signed `GET /federation/users/<handle>` and expands the user to
 * `device@b.test` members, so alice's message reaches both of bob's devices. An unknown remote
 * user is refused (`Unknown User` 404), a domain that is not a peer keeps
 * `Remote User Not Addressable` (400), and a forged answer (wrong key, or a valid signature over
 * an answer to another query) is refused as `Remote User Unavailable` (502).
 *
 * Runs on PGlite + memory, and on Postgres + Redis when COMMUCAT_TEST_PG_DSN and
 * COMMUCAT_TEST_REDIS_URL are set.
 */
import assert from "node:assert/strict";
import { freePort } from "../helpers/wait.ts";
import { bytesToHex } from "@noble/hashes/utils.js";
import { CommuCatError } from "../../client/sdk.ts";
import { generateKeypair, type Keypair } from "../../protocol/crypto.ts";
import {
  type FederationEvent,
  federationKeypair,
  signEvent,
  toRfc3339,
} from "../../protocol/federation.ts";
import type { Config } from "../../server/config/mod.ts";
import { LogCapture, type ServerHandle, uid } from "../server/helpers/server.ts";
import {
  type Domain,
  domainConfig,
  domainTests,
  pairedConfigs,
  runDomains,
} from "../helpers/domains.ts";

/** A fake peer c.test: answers every user query with what `answer` builds. */
function fakePeer(
  answer: (query: FederationEvent) => { event: FederationEvent; secret: Uint8Array },
) {
  const port = freePort();
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, (req) => {
    const query = JSON.parse(req.headers.get("commucat-federation")!).event as FederationEvent;
    const { event, secret } = answer(query);
    return Response.json({ event, signature: bytesToHex(signEvent(event, secret)) });
  });
  return { port, server };
}

async function refusal(p: Promise<unknown>): Promise<CommuCatError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CommuCatError) return err;
    throw err;
  }
  assert.fail("expected a refusal");
}

async function scenario(makeDomain: () => Promise<Domain>) {
  const logs = new LogCapture().start();
  const [cfgA, cfgB] = pairedConfigs();
  // c.test: a peer a.test pins, played by a fake server that forges answers.
  const cfgC = domainConfig("c.test");
  const secretC = federationKeypair(cfgC.crypto.federationSeed).secretKey;
  const forged = { mode: "wrong-key" as "wrong-key" | "other-query" };
  const peerC = fakePeer((query) => ({
    event: {
      event_id: crypto.randomUUID(),
      origin: "c.test",
      scope: "a.test",
      created_at: toRfc3339(new Date()),
      payload: {
        kind: "user-devices",
        request: forged.mode === "other-query" ? crypto.randomUUID() : query.event_id,
        user: (query.payload as unknown as { user: string }).user,
        devices: [{ id: "mallory-phone", public_key: "00".repeat(32) }],
        // deno-lint-ignore no-explicit-any
      } as any,
    },
    secret: forged.mode === "wrong-key"
      ? federationKeypair(new Uint8Array(32).fill(7)).secretKey
      : secretC,
  }));
  cfgA.federation.peers.push({
    domain: "c.test",
    endpoint: `http://127.0.0.1:${peerC.port}`,
    publicKey: federationKeypair(cfgC.crypto.federationSeed).publicKey,
  });
  const running = await runDomains(cfgA, cfgB, makeDomain);
  const { b, serverA, serverB } = running;
  const open = (
    server: ServerHandle,
    config: Config,
    deviceId: string,
    keypair: Keypair,
    handle?: string,
  ) => running.open(server, config, deviceId, keypair, handle ? { user: { handle } } : {});

  try {
    const aliceHandle = uid("alice");
    const aliceId = uid("alice-phone");
    const bobHandle = uid("bob");
    const phoneId = uid("bob-phone");
    const laptopId = uid("bob-laptop");
    const revokedId = uid("bob-old");
    const phoneKeys = generateKeypair();
    const laptopKeys = generateKeypair();
    // Bob has two active devices on b.test (and a revoked one, which is not listed).
    const bobUser = await b.storage.users.create({ handle: bobHandle });
    for (const [id, keys] of [[phoneId, phoneKeys], [laptopId, laptopKeys]] as const) {
      await b.storage.devices.register(
        { id, userId: bobUser.id, publicKey: keys.publicKey, status: "active" },
        "test",
      );
    }
    await b.storage.devices.register(
      {
        id: revokedId,
        userId: bobUser.id,
        publicKey: generateKeypair().publicKey,
        status: "active",
      },
      "test",
    );
    await b.storage.devices.revoke(revokedId, "test");
    const alice = await open(serverA, cfgA, aliceId, generateKeypair(), aliceHandle);
    const phone = await open(serverB, cfgB, phoneId, phoneKeys);
    const laptop = await open(serverB, cfgB, laptopId, laptopKeys);
    const phoneInbox = phone.messages();
    const laptopInbox = laptop.messages();

    const channel = 9;
    const ack = await alice.join(channel, [`@${bobHandle}@b.test`]);
    const members = (ack as { members?: string[] }).members;
    assert.ok(Array.isArray(members), JSON.stringify(ack));
    assert.deepEqual(
      [...members!].filter((m) => m.endsWith("@b.test")).sort(),
      [`${laptopId}@b.test`, `${phoneId}@b.test`].sort(),
    );
    assert.ok(logs.has("federation user answered", { peer: "a.test", devices: 2 }));

    const sent = await alice.send(channel, "hello both");
    assert.equal(sent.remote?.length, 2, JSON.stringify(sent));
    for (const inbox of [phoneInbox, laptopInbox]) {
      const m = (await inbox.next()).value!;
      assert.equal(m.text(), "hello both");
      assert.equal(m.sender, `${aliceId}@a.test`);
    }

    // The key directory answers for the remote user with the keys its peer listed.
    const keys = await alice.serverRequest("keys", {
      users: [`@${bobHandle}@b.test`],
    }) as unknown as {
      users: { user: string; handle: string; devices: string[] }[];
      devices: { device: string; user: string; status: string; public_key: string }[];
      remote: string[];
    };
    assert.equal(keys.users.length, 1);
    assert.equal(keys.users[0].user, `${bobHandle}@b.test`);
    assert.equal(keys.users[0].handle, bobHandle);
    assert.deepEqual(
      [...keys.users[0].devices].sort(),
      [`${laptopId}@b.test`, `${phoneId}@b.test`].sort(),
    );
    assert.deepEqual(
      keys.devices.map((d) => [d.device, d.status, d.public_key]).sort(),
      [
        [`${laptopId}@b.test`, "active", bytesToHex(laptopKeys.publicKey)],
        [`${phoneId}@b.test`, "active", bytesToHex(phoneKeys.publicKey)],
      ].sort(),
    );
    assert.deepEqual(keys.remote, []);
    const noKeys = await refusal(
      alice.serverRequest("keys", { users: [`@${uid("nobody")}@b.test`] }),
    );
    assert.equal(noKeys.title, "Unknown User");

    // An unknown user of a peer: 404 Unknown User.
    const unknown = await refusal(alice.join(10, [`@${uid("nobody")}@b.test`]));
    assert.equal(unknown.title, "Unknown User");
    assert.equal(unknown.status, 404);
    // A domain that is not a peer: still Remote User Not Addressable.
    const stranger = await refusal(alice.join(11, [`@${bobHandle}@d.test`]));
    assert.equal(stranger.title, "Remote User Not Addressable");
    assert.equal(stranger.status, 400);
    // Forged answers: signed with another key, or a valid signature over another query's answer.
    for (const mode of ["wrong-key", "other-query"] as const) {
      forged.mode = mode;
      const bad = await refusal(alice.join(12, [`@mallory-${mode}@c.test`]));
      assert.equal(bad.title, "Remote User Unavailable", mode);
      assert.equal(bad.status, 502);
    }
    assert.ok(logs.has("federation user answer refused", { peer: "c.test" }));
    // The connection survived every refusal.
    const again = await alice.send(channel, "still here");
    assert.equal(again.remote?.length, 2);
    await phoneInbox.return?.();
    await laptopInbox.return?.();
  } finally {
    await running.close();
    await peerC.server.shutdown();
    logs.stop();
  }
}

domainTests("remote users across domains: @user@peer expands to its devices", scenario);
