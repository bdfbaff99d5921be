/**
 * A flood against the rate limits, shared by two server processes through Redis: handshakes
 * and new devices from one address, spread over both nodes, are refused past the limit with
 * 429s that carry `retry_after`; established sessions are untouched. Uses COMMUCAT_TEST_PG_DSN
 * and a Redis of the test's own (so the buckets of 127.0.0.1 are the test's alone).
 */
import assert from "node:assert/strict";
import { HandshakeRefused } from "../server/helpers/client.ts";
import { connect, identity, REDIS_SERVER, withFaultNodes } from "./harness.ts";

const PG = Deno.env.get("COMMUCAT_TEST_PG_DSN") ?? null;

Deno.test({
  name: "flood: handshakes and registrations per address are limited across two nodes",
  ignore: PG === null || REDIS_SERVER === null,
  sanitizeOps: false,
  sanitizeResources: false,
}, () =>
  withFaultNodes({
    prefix: "flood",
    dsn: PG!,
    env: { COMMUCAT_HANDSHAKES_PER_MINUTE: "40", COMMUCAT_REGISTRATIONS_PER_HOUR: "10" },
  }, async ({ nodes, keys, track }) => {
    // Ten known devices first (the registration limit: 10 per hour).
    const known = Array.from({ length: 10 }, () => identity("flood"));
    for (const [i, who] of known.entries()) {
      track(await connect(nodes[i % 2].tcpPort, keys.publicKey, who));
    }
    // An eleventh new device is refused, on either node.
    const extra = await connect(nodes[1].tcpPort, keys.publicKey, identity("flood-new"))
      .then(() => null, (e) => e);
    assert.ok(extra instanceof HandshakeRefused, String(extra));
    assert.equal(extra.problem.status, 429);
    assert.match(String(extra.problem.detail), /registrations_per_hour/);

    // Known devices reconnect until the handshake bucket (40 per minute, 11 used) runs dry.
    let ok = 0;
    let limited = 0;
    let retryAfter = 0;
    for (let i = 0; i < 60; i++) {
      const who = known[i % known.length];
      try {
        const c = await connect(nodes[i % 2].tcpPort, keys.publicKey, who);
        ok++;
        await c.close();
      } catch (err) {
        if (!(err instanceof HandshakeRefused)) throw err;
        assert.equal(err.problem.status, 429);
        assert.equal(err.problem.fatal, false);
        retryAfter = Math.max(retryAfter, Number(err.problem.retry_after));
        limited++;
      }
    }
    console.log(
      `flood: 60 handshakes over two nodes: ${ok} accepted, ${limited} refused (retry_after up to ` +
        `${retryAfter} s); the 11th new device refused`,
    );
    // 40 per minute in all, 11 taken before; a few more drain in while the flood runs.
    assert.ok(ok >= 25 && ok <= 33, `${ok} accepted`);
    assert.equal(ok + limited, 60);
    assert.ok(retryAfter >= 1);
    for (const n of nodes) {
      const text = await (await fetch(`http://127.0.0.1:${n.httpPort}/metrics`)).text();
      assert.match(text, /commucat_rate_limited_total\{kind="handshake"/);
    }
  }));
