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
import { cli, DENO_CONFIG, keyValues, show } from "./run.ts";

const SERVER = new URL("../../app/serve.ts", import.meta.url).pathname;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

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
    const server = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", DENO_CONFIG, SERVER],
      env: {
        ...env,
        NO_COLOR: "1",
        PATH: Deno.env.get("PATH") ?? "",
        HOME: Deno.env.get("HOME") ?? "",
        ...(Deno.env.get("DENO_DIR") ? { DENO_DIR: Deno.env.get("DENO_DIR")! } : {}),
      },
      clearEnv: true,
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(server.stderr).text();
    const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    try {
      let tcpPort = 0;
      while (!seen.includes("admin console on")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the server exited:\n${seen}\n${await stderr}`);
        seen += value;
      }
      tcpPort = Number(seen.match(/CCP-1 listening on tcp:\/\/127\.0\.0\.1:(\d+)/)![1]);
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
      reader.releaseLock();
      server.kill("SIGTERM");
      await server.status;
      await server.stdout.cancel().catch(() => {});
      await stderr;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
