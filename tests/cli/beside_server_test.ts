/**
 * The CLI beside a running server on the embedded defaults: the server holds the embedded
 * database, so `deno task cli approve-device ID` goes to the server's admin API (with the
 * start-up token file, since no admin token is configured) — and the device's handshake then
 * succeeds. Both run as separate processes, the way an operator runs them.
 */
import assert from "node:assert/strict";
import { connect } from "../../client/sdk.ts";
import { CommuCatError } from "../../client/errors.ts";
import { generateKeypair } from "../../protocol/crypto.ts";
import { cli, keyValues, show } from "./run.ts";
import { freePort, waitUntil } from "../helpers/wait.ts";
import { spawnNode, stopNode } from "../helpers/node_process.ts";

Deno.test({
  name: "cli approve-device beside a running server on the embedded defaults",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "commucat-beside-" });
    const consolePort = freePort();
    const env: Record<string, string> = {
      COMMUCAT_DATA_DIR: `${dir}/data`,
      COMMUCAT_BIND: "127.0.0.1:0",
      COMMUCAT_TCP_BIND: "127.0.0.1:0",
      COMMUCAT_CONSOLE_BIND: `127.0.0.1:${consolePort}`,
      COMMUCAT_AUTO_APPROVE_DEVICES: "false",
    };
    const server = await spawnNode(env, dir, { clean: true });
    try {
      // The console (and with it the admin API the CLI uses) is up a little after the relay.
      await waitUntil(
        () => server.output.some((l) => l.startsWith("admin console on")),
        "the admin console",
        60_000,
      );
      const seen = server.output.join("\n");
      const tcpPort = server.tcpPort;
      const serverKey = seen.match(/noise static public key: ([0-9a-f]{64})/)![1];

      const deviceId = `phone-${crypto.randomUUID().slice(0, 8)}`;
      const keypair = generateKeypair();
      const open = () =>
        connect({
          transport: "tcp",
          host: "127.0.0.1",
          port: tcpPort,
          deviceId,
          keypair,
          serverKey,
          user: { handle: "beside" },
          keepaliveMs: 0,
          handshakeTimeoutMs: 5_000,
          reconnect: false,
        });
      await assert.rejects(open, (err: Error) => {
        assert.ok(err instanceof CommuCatError, String(err));
        assert.equal(err.status, 403);
        return true;
      });

      const args = ["approve-device", deviceId];
      const r = await cli(args, env, dir);
      assert.equal(r.code, 0, show(args, r));
      assert.equal(keyValues(r.stdout).status, "active");
      assert.equal(keyValues(r.stdout).event, "approved");
      assert.match(r.stderr, /a running server holds the embedded database; using its admin API/);

      const client = await open();
      assert.ok(client.connected, "the approved device completes its handshake");
      await client.close();

      // The same listing either way: the API answers the CLI's read commands too.
      const listed = await cli(["devices", "--format", "json"], env, dir);
      assert.equal(listed.code, 0, show(["devices"], listed));
      assert.equal(JSON.parse(listed.stdout).items[0].id, deviceId);
      const audit = await cli(["audit", "--action", "device.approve"], env, dir);
      assert.match(
        audit.stdout,
        new RegExp(`api:cli:cli-test +device\\.approve +device:${deviceId}`),
      );
      // --server URL names the server explicitly; the node lists itself from its heartbeat.
      const url = `http://127.0.0.1:${consolePort}`;
      const nodes = await cli(["--server", url, "nodes", "--format", "json"], env, dir);
      assert.equal(nodes.code, 0, show(["--server", url, "nodes"], nodes));
      const [node] = JSON.parse(nodes.stdout);
      assert.match(node.address, new RegExp(`^tcp://127\\.0\\.0\\.1:${tcpPort} `));
      assert.equal(node.nodeId, seen.match(/"node":"(node-[0-9a-f]+)"/)?.[1] ?? node.nodeId);
      const queue = await cli(["queue", deviceId], env, dir);
      assert.equal(queue.code, 0, show(["queue", deviceId], queue));
      assert.equal(keyValues(queue.stdout).depth, "0");
      const unknown = await cli(["approve-device", "nobody"], env, dir);
      assert.equal(unknown.code, 1, show(["approve-device", "nobody"], unknown));
      assert.match(unknown.stderr, /^error: device "nobody" not found$/m);
    } finally {
      await stopNode(server);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
