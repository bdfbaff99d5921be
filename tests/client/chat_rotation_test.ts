/**
 * The chat client follows a server key rotation: given the server's federation key, it accepts
 * the catalog the server announces during a rotation, pins the next key in
 * `<key file>.servers.json`, and after the switch (the old key no longer accepted) connects with
 * the pinned key although its --server-key still names the old one. PGlite + memory, and
 * Postgres + Redis when the environment names them.
 */
import assert from "node:assert/strict";
import { freePort } from "../helpers/wait.ts";
import { join } from "node:path";
import { bytesToHex } from "@noble/hashes/utils.js";
import { type ChatIo, runChat } from "../../client/chat.ts";
import { readServerPin, serverPinFileFor } from "../../client/keystore.ts";
import { generateKeypair } from "../../protocol/crypto.ts";
import { federationKeypair } from "../../protocol/federation.ts";
import type { Config } from "../../server/config/mod.ts";
import {
  LogCapture,
  openTestStorage,
  startServer,
  storageKinds,
  testConfig,
  uid,
  waitFor,
} from "../server/helpers/server.ts";

type Pair = { privateKey: Uint8Array; publicKey: Uint8Array };

function withKeys(base: Config, current: Pair, next?: Pair): Config {
  return {
    ...base,
    crypto: {
      ...base.crypto,
      noisePrivate: current.privateKey,
      noisePublic: current.publicKey,
      noiseNext: next?.privateKey ?? null,
      noisePrevious: null,
      noisePreviousNotAfter: null,
    },
  };
}

/** Runs the chat until `until` holds for its output, then ends its input. */
async function chat(argv: string[], until: (lines: string[]) => boolean) {
  const lines: string[] = [];
  let close!: () => void;
  const stdin = new ReadableStream<Uint8Array>({
    start(controller) {
      close = () => controller.close();
    },
  });
  const io: ChatIo = { stdin, out: (l) => lines.push(l), err: (l) => lines.push(`ERR ${l}`) };
  const running = runChat(argv, io);
  try {
    await waitFor(() => until(lines), 30_000);
  } finally {
    close();
  }
  const code = await running;
  return { code, lines };
}

for (const kind of storageKinds()) {
  Deno.test({
    name: `chat client pins the server's next key from the announced catalog (${kind})`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const { storage, close } = await openTestStorage(kind);
      const logs = new LogCapture().start();
      const dir = await Deno.makeTempDir({ prefix: "commucat-chat-rotation-" });
      const k1 = generateKeypair(), k2 = generateKeypair();
      const port = freePort();
      const base = testConfig({ server: { tcpBind: { hostname: "127.0.0.1", port } } });
      const fedKey = bytesToHex(federationKeypair(base.crypto.federationSeed).publicKey);
      const keyFile = join(dir, "me.json");
      const argv = [
        "--device",
        uid("chat-rot"),
        "--peer",
        uid("nobody"),
        "--no-e2e",
        "--server",
        `127.0.0.1:${port}`,
        "--server-key",
        bytesToHex(k1.publicKey),
        "--federation-key",
        fedKey,
        "--key-file",
        keyFile,
      ];
      let server = await startServer(withKeys(base, k1, k2), { storage });
      try {
        // During the announce step: the catalog names k2 as next; the chat pins it.
        const first = await chat(argv, (l) => l.some((x) => x.includes("server's key is now")));
        assert.equal(first.code, 0, first.lines.join("\n"));
        const pinFile = serverPinFileFor(keyFile);
        const pin = await readServerPin(pinFile, `127.0.0.1:${port}`);
        assert.equal(pin?.server_key, bytesToHex(k1.publicKey));
        assert.deepEqual(pin?.next_server_keys, [bytesToHex(k2.publicKey)]);
        assert.equal(pin?.federation_key, fedKey);

        // After the switch and its grace: only k2 is accepted. The chat still names k1 on its
        // command line, yet connects with the pinned next key and pins it as the key.
        await server.stop();
        server = await startServer(withKeys(base, k2), { storage });
        const second = await chat(
          argv,
          (l) =>
            l.some((x) => x.startsWith("* chatting with")) &&
            l.some((x) => x.includes("server's key is now")),
        );
        assert.equal(second.code, 0, second.lines.join("\n"));
        assert.ok(second.lines.some((l) => l.includes("pinned after a key rotation")));
        const after = await readServerPin(pinFile, `127.0.0.1:${port}`);
        assert.equal(after?.server_key, bytesToHex(k2.publicKey));
      } finally {
        await server.stop();
        logs.stop();
        await close();
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    },
  });
}
