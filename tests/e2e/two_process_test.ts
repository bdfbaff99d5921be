/**
 * Two real server processes (`app/serve.ts`, as `deno task serve` runs it) sharing one
 * Postgres and one Redis deliver to each other's clients, and a device that moves from one
 * node to the other gets what was queued for it. Needs COMMUCAT_TEST_PG_DSN and
 * COMMUCAT_TEST_REDIS_URL: the embedded database belongs to one process only.
 */
import assert from "node:assert/strict";
import { type Frame, FrameType } from "../../protocol/frame.ts";
import { generateKeypair, type Keypair } from "../../protocol/crypto.ts";
import { TestClient } from "../server/helpers/client.ts";
import {
  nodeEnv as sharedNodeEnv,
  type NodeProcess,
  spawnNode,
  stopNode,
} from "../helpers/node_process.ts";
import { realServices, uid } from "../server/helpers/server.ts";
import { OPEN_LIMITS_ENV } from "../server/helpers/server.ts";

const real = realServices();

/** What every node shares: the real services, port 0 everywhere, one Noise key, auto-approval. */
function nodeEnv(keys: Keypair): Record<string, string> {
  return sharedNodeEnv(keys, real!, OPEN_LIMITS_ENV);
}

/**
 * Starts one node per name, each in its own folder under `dir`, appending each to `nodes` as
 * soon as it runs (so the caller's clean-up stops those started before a failure).
 */
async function spawnNodes(
  dir: string,
  names: string[],
  env: Record<string, string>,
  nodes: NodeProcess[],
): Promise<void> {
  for (const name of names) nodes.push(await spawnNode(env, `${dir}/${name}`));
}

Deno.test({
  name: "two server processes share Postgres + Redis and deliver to each other's clients",
  ignore: real === null,
}, async () => {
  const keys = generateKeypair();
  const dir = await Deno.makeTempDir({ prefix: "commucat-two-nodes-" });
  const env = { ...nodeEnv(keys), COMMUCAT_ADMIN_TOKEN: "two-node-token" };
  const nodes: NodeProcess[] = [];
  const clients: TestClient[] = [];
  try {
    await spawnNodes(dir, ["one", "two"], env, nodes);
    const [one, two] = nodes;
    const connect = async (port: number, deviceId: string, keypair = generateKeypair()) => {
      const c = await TestClient.connect({
        port,
        serverStatic: keys.publicKey,
        deviceId,
        keypair,
        user: { handle: deviceId },
      });
      clients.push(c);
      return c;
    };
    const aId = uid("proc-a");
    const bId = uid("proc-b");
    const bKey = generateKeypair();
    const a = await connect(one.tcpPort, aId);
    const b = await connect(two.tcpPort, bId, bKey);
    const text = (f: Frame) => new TextDecoder().decode(f.payload);

    assert.equal((await a.join(77, [bId])).type, FrameType.Ack);
    const s1 = a.msg(77, "from node one");
    assert.equal((await a.reply(s1)).type, FrameType.Ack);
    assert.equal(text(await b.nextOfType(FrameType.Msg)), "from node one");
    // Routes live in the shared store: b joins the same conversation on its own node.
    assert.equal((await b.join(77, [aId])).type, FrameType.Ack);
    const s2 = b.msg(77, "from node two");
    assert.equal((await b.reply(s2)).type, FrameType.Ack);
    assert.equal(text(await a.nextOfType(FrameType.Msg)), "from node two");

    // b goes away; what a sends meanwhile waits in the shared queue and reaches b on node one.
    await b.close();
    await new Promise((r) => setTimeout(r, 200));
    const s3 = a.msg(77, "queued for b");
    await a.reply(s3);
    const b2 = await connect(one.tcpPort, bId, bKey);
    assert.equal(text(await b2.nextOfType(FrameType.Msg)), "queued for b");

    // Both nodes export metrics behind the token.
    for (const node of nodes) {
      const http = Deno.createHttpClient({});
      const res = await fetch(`http://127.0.0.1:${node.httpPort}/metrics`, {
        headers: { authorization: "Bearer two-node-token" },
        client: http,
      });
      assert.equal(res.status, 200);
      assert.match(await res.text(), /commucat_bus_messages_total/);
      http.close();
    }
  } finally {
    for (const c of clients) await c.close();
    for (const node of nodes) {
      const status = await stopNode(node);
      assert.equal(status.code, 0, node.output.slice(-20).join("\n"));
      assert.ok(node.output.some((l) => l.includes('"msg":"stopped"')));
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a node killed abruptly loses none of the frames for its devices",
  ignore: real === null,
}, async () => {
  const keys = generateKeypair();
  const dir = await Deno.makeTempDir({ prefix: "commucat-crash-" });
  const env = nodeEnv(keys);
  const nodes: NodeProcess[] = [];
  const clients: TestClient[] = [];
  try {
    await spawnNodes(dir, ["survivor", "victim"], env, nodes);
    const [survivor, victim] = nodes;
    const aId = uid("crash-a");
    const bId = uid("crash-b");
    const bKey = generateKeypair();
    const connect = async (port: number, deviceId: string, keypair: Keypair, autoAck = true) => {
      const c = await TestClient.connect({
        port,
        serverStatic: keys.publicKey,
        deviceId,
        keypair,
        user: { handle: deviceId },
        autoAck,
      });
      clients.push(c);
      return c;
    };
    const text = (f: Frame) => new TextDecoder().decode(f.payload);
    const a = await connect(survivor.tcpPort, aId, generateKeypair());
    // b reads but never acknowledges: what it got is still the server's responsibility.
    const b = await connect(victim.tcpPort, bId, bKey, false);
    assert.equal((await a.join(78, [bId])).type, FrameType.Ack);
    await new Promise((r) => setTimeout(r, 200)); // the route change crosses the bus
    const s1 = a.msg(78, "handed over, never acknowledged");
    assert.equal((await a.reply(s1)).type, FrameType.Ack);
    assert.equal(text(await b.nextOfType(FrameType.Msg)), "handed over, never acknowledged");

    // The node holding b dies without a graceful stop: no requeue, its route left behind.
    await stopNode(victim, "SIGKILL");
    await b.ended().catch(() => {});
    const s2 = a.msg(78, "sent while its node was dead");
    assert.equal((await a.reply(s2)).type, FrameType.Ack);

    // b comes back on the surviving node and gets both.
    const b2 = await connect(survivor.tcpPort, bId, bKey);
    const got = [
      text(await b2.nextOfType(FrameType.Msg)),
      text(await b2.nextOfType(FrameType.Msg)),
    ];
    assert.deepEqual(got, ["handed over, never acknowledged", "sent while its node was dead"]);
  } finally {
    for (const c of clients) await c.close();
    const [survivor, victim] = nodes;
    if (victim) await stopNode(victim, "SIGKILL");
    if (survivor) {
      const status = await stopNode(survivor);
      assert.equal(status.code, 0, survivor.output.slice(-20).join("\n"));
    }
    await Deno.remove(dir, { recursive: true });
  }
});
