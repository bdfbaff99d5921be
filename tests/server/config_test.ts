import assert from "node:assert/strict";
import { join } from "node:path";
import { x25519 } from "@noble/curves/ed25519.js";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import {
  CONFIG_KEYS,
  ConfigError,
  describeKeys,
  generateKeys,
  KEY_FILE_NAME,
  loadConfig,
  OTHER_VARIABLES,
} from "../../server/config/mod.ts";
import { federationKeypair } from "../../protocol/federation.ts";

/** Rate limits and caps left at their defaults by the file test. */
const DEFAULTS_OF_NEW = {
  handshakesPerMinute: 300,
  registrationsPerHour: 20,
  framesPerSecond: 20000,
  bytesPerSecond: 32 * 1024 * 1024,
  messagesBurst: 60,
  messagesPerMinute: 60,
  joinsPerMinute: 60,
  signInFailuresPerHour: 20,
  unauthenticatedPerAddress: 64,
  unauthenticatedTotal: 2048,
  memoryBudget: 2 * 1024 * 1024 * 1024,
  httpConnectionsPerAddress: 256,
  httpConnectionsTotal: 8192,
  httpHeaderTimeout: 10,
  httpBodyTimeout: 30,
  maxConversationsPerDevice: 512,
  maxMembersPerJoin: 256,
  maxDevicesPerUser: 8,
  pairingCodesPerHour: 10,
  pairingAttemptsPerHour: 20,
  routeIdleTtl: 2_592_000,
  presenceFanout: 4096,
  liveAckTimeoutMs: 1000,
};

const REPO = new URL("../../", import.meta.url).pathname;
const PRIV = "000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f";
const PUB = bytesToHex(x25519.getPublicKey(Uint8Array.from({ length: 32 }, (_, i) => i % 16)));
const SEED = "202122232425262728292a2b2c2d2e2f202122232425262728292a2b2c2d2e2f";
const PEER_KEY = "303132333435363738393a3b3c3d3e3f303132333435363738393a3b3c3d3e3f";
/** Keys configured, so loading never touches the disk. */
const KEYS_ENV = { COMMUCAT_NOISE_PRIVATE: PRIV, COMMUCAT_FEDERATION_SEED: SEED };

/** Runs `fn` in a fresh temporary directory that is removed afterwards. */
async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "commucat_config_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Writes `toml` as commucat.toml in `dir` and loads it with `env`. */
async function loadToml(dir: string, toml: string, env: Record<string, string> = KEYS_ENV) {
  const file = join(dir, "commucat.toml");
  await Deno.writeTextFile(file, toml);
  return await loadConfig({ env, file, cwd: dir });
}

async function refused(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    return err.message;
  }
  assert.fail("configuration was accepted");
}

Deno.test("defaults apply with no file and no environment", async () => {
  await inTempDir(async (dir) => {
    const config = await loadConfig({ env: KEYS_ENV, file: null, cwd: dir });
    assert.equal(config.source, null);
    assert.deepEqual(config.server.bind, { hostname: "127.0.0.1", port: 8443 });
    assert.deepEqual(config.server.tcpBind, { hostname: "127.0.0.1", port: 9443 });
    assert.deepEqual(config.server.consoleBind, { hostname: "127.0.0.1", port: 8080 });
    assert.equal(config.server.tlsCert, null);
    assert.equal(config.server.tlsKey, null);
    assert.equal(config.server.domain, "localhost");
    assert.equal(config.server.autoApproveDevices, true);
    assert.equal(config.server.keepalive, 60);
    assert.equal(config.server.dataDir, join(dir, "data"));
    assert.equal(config.server.handshakeTimeout, 10);
    assert.equal(config.server.allowPlaintextV1, false);
    assert.deepEqual(config.storage, { postgresDsn: null, redisUrl: null });
    assert.equal(config.crypto.prologue, "commucat");
    assert.equal(config.crypto.generatedKeyFile, null);
    assert.deepEqual(config.federation.peers, []);
    assert.deepEqual(config.ledger, { mode: "null", target: null });
    assert.deepEqual(config.limits, {
      presenceTtl: 60,
      relayTtl: 604800,
      outboundQueueFrames: 4096,
      outboundQueueBytes: 8 * 1024 * 1024,
      maxInflight: 1024,
      ...DEFAULTS_OF_NEW,
    });
    assert.equal(config.admin.token, null);
    // Configured keys are used, nothing is written.
    assert.equal(bytesToHex(config.crypto.noisePrivate), PRIV);
    assert.equal(bytesToHex(config.crypto.noisePublic), PUB);
    assert.equal(bytesToHex(config.crypto.federationSeed), SEED);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("file values are read, including numbers written as strings", async () => {
  await inTempDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "c.pem"), "cert");
    await Deno.writeTextFile(join(dir, "k.pem"), "key");
    const config = await loadToml(
      dir,
      `
[server]
bind = "0.0.0.0:443"
tcp_bind = "[::1]:9000"
console_bind = "localhost:0"
tls_cert = "c.pem"
tls_key = "k.pem"
domain = "Chat.Example.org"
auto_approve_devices = "no"
keepalive = "30"
data_dir = "state"
handshake_timeout = 5
allow_plaintext_v1 = "yes"
[storage]
postgres_dsn = "postgres://commucat:pw@db.internal:5432/commucat"
redis_url = "redis://:pw@127.0.0.1:6379/3"
[crypto]
noise_private = "${PRIV}"
noise_public = "${PUB.toUpperCase()}"
federation_seed = "${SEED}"
prologue = "custom"
[ledger]
mode = "file"
target = "audit/ledger.jsonl"
[limits]
presence_ttl = "30"
relay_ttl = 86400
outbound_queue_frames = "100"
outbound_queue_bytes = 65536
max_inflight = "16"
[admin]
token = "s3cret-token-value"
`,
      {},
    );
    assert.equal(config.source, join(dir, "commucat.toml"));
    assert.deepEqual(config.server.bind, { hostname: "0.0.0.0", port: 443 });
    assert.deepEqual(config.server.tcpBind, { hostname: "::1", port: 9000 });
    assert.deepEqual(config.server.consoleBind, { hostname: "localhost", port: 0 });
    assert.equal(config.server.tlsCert, join(dir, "c.pem"));
    assert.equal(config.server.tlsKey, join(dir, "k.pem"));
    assert.equal(config.server.domain, "chat.example.org");
    assert.equal(config.server.autoApproveDevices, false);
    assert.equal(config.server.keepalive, 30);
    assert.equal(config.server.dataDir, join(dir, "state"));
    assert.equal(config.server.handshakeTimeout, 5);
    assert.equal(config.server.allowPlaintextV1, true);
    assert.equal(config.storage.postgresDsn, "postgres://commucat:pw@db.internal:5432/commucat");
    assert.equal(config.storage.redisUrl, "redis://:pw@127.0.0.1:6379/3");
    assert.equal(bytesToHex(config.crypto.noisePublic), PUB);
    assert.equal(config.crypto.prologue, "custom");
    assert.deepEqual(config.ledger, { mode: "file", target: join(dir, "audit/ledger.jsonl") });
    assert.deepEqual({ ...config.limits, ...DEFAULTS_OF_NEW }, {
      presenceTtl: 30,
      relayTtl: 86400,
      outboundQueueFrames: 100,
      outboundQueueBytes: 65536,
      maxInflight: 16,
      ...DEFAULTS_OF_NEW,
    });
    assert.equal(config.admin.token, "s3cret-token-value");
  });
});

Deno.test("the environment wins over the file; empty variables mean unset", async () => {
  await inTempDir(async (dir) => {
    const config = await loadToml(
      dir,
      `[server]\nbind = "127.0.0.1:1000"\nkeepalive = 30\ndomain = "file.example"\n` +
        `[limits]\npresence_ttl = 10\n[ledger]\nmode = "debug"\n`,
      {
        ...KEYS_ENV,
        COMMUCAT_BIND: "127.0.0.1:2000",
        COMMUCAT_KEEPALIVE: "90",
        COMMUCAT_DOMAIN: "",
        COMMUCAT_PRESENCE_TTL: "15",
        COMMUCAT_RELAY_TTL: "3600",
        COMMUCAT_LEDGER: "file",
        COMMUCAT_LEDGER_TARGET: "/tmp/ledger.jsonl",
        COMMUCAT_AUTO_APPROVE_DEVICES: "0",
        COMMUCAT_ALLOW_PLAINTEXT_V1: "true",
        COMMUCAT_HANDSHAKE_TIMEOUT: "3",
        COMMUCAT_OUTBOUND_QUEUE_FRAMES: "7",
        COMMUCAT_OUTBOUND_QUEUE_BYTES: "700",
        COMMUCAT_MAX_INFLIGHT: "5",
        COMMUCAT_PG_DSN: "postgresql://u@h/d",
        COMMUCAT_REDIS_URL: "redis://h:6379",
        COMMUCAT_NOISE_PROLOGUE: "env-prologue",
        COMMUCAT_ADMIN_TOKEN: "from-env",
        COMMUCAT_TCP_BIND: "[::]:9",
        COMMUCAT_CONSOLE_BIND: "0.0.0.0:8",
        COMMUCAT_DATA_DIR: "/tmp/commucat-data",
      },
    );
    assert.deepEqual(config.server.bind, { hostname: "127.0.0.1", port: 2000 });
    assert.equal(config.server.keepalive, 90);
    assert.equal(config.server.domain, "file.example");
    assert.equal(config.limits.presenceTtl, 15);
    assert.equal(config.limits.relayTtl, 3600);
    assert.deepEqual(config.ledger, { mode: "file", target: "/tmp/ledger.jsonl" });
    assert.equal(config.server.autoApproveDevices, false);
    assert.equal(config.server.allowPlaintextV1, true);
    assert.equal(config.server.handshakeTimeout, 3);
    assert.equal(config.limits.outboundQueueFrames, 7);
    assert.equal(config.limits.outboundQueueBytes, 700);
    assert.equal(config.limits.maxInflight, 5);
    assert.equal(config.storage.postgresDsn, "postgresql://u@h/d");
    assert.equal(config.storage.redisUrl, "redis://h:6379");
    assert.equal(config.crypto.prologue, "env-prologue");
    assert.equal(config.admin.token, "from-env");
    assert.deepEqual(config.server.tcpBind, { hostname: "::", port: 9 });
    assert.deepEqual(config.server.consoleBind, { hostname: "0.0.0.0", port: 8 });
    assert.equal(config.server.dataDir, "/tmp/commucat-data");
  });
});

Deno.test("COMMUCAT_CONFIG names the file; ./commucat.toml is used when present", async () => {
  await inTempDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "other.toml"), `[server]\nkeepalive = 11\n`);
    const named = await loadConfig({
      env: { ...KEYS_ENV, COMMUCAT_CONFIG: "other.toml" },
      cwd: dir,
    });
    assert.equal(named.server.keepalive, 11);
    assert.equal(named.source, join(dir, "other.toml"));

    const none = await loadConfig({ env: KEYS_ENV, cwd: dir });
    assert.equal(none.source, null);

    await Deno.writeTextFile(join(dir, "commucat.toml"), `[server]\nkeepalive = 22\n`);
    const local = await loadConfig({ env: KEYS_ENV, cwd: dir });
    assert.equal(local.server.keepalive, 22);

    const missing = await refused(
      loadConfig({ env: { ...KEYS_ENV, COMMUCAT_CONFIG: "nope.toml" }, cwd: dir }),
    );
    assert.match(missing, /nope\.toml.*COMMUCAT_CONFIG/);
  });
});

Deno.test("booleans accept true/false, strings and 1/0", async () => {
  for (
    const [text, expected] of [["true", true], ["FALSE", false], ["1", true], ["0", false], [
      "yes",
      true,
    ], ["no", false]] as const
  ) {
    const config = await loadConfig({
      env: { ...KEYS_ENV, COMMUCAT_AUTO_APPROVE_DEVICES: text },
      file: null,
    });
    assert.equal(config.server.autoApproveDevices, expected, text);
  }
});

Deno.test("bad values are refused with the key, the source and what was expected", async () => {
  await inTempDir(async (dir) => {
    const cases: [string, RegExp][] = [
      [
        `[server]\nkeepalive = "abc"`,
        /invalid \[server\] keepalive in .*commucat\.toml: expected a positive integer number of seconds.*got "abc"/,
      ],
      [`[server]\nkeepalive = 0`, /\[server\] keepalive.*positive integer.*got 0/],
      [`[server]\nkeepalive = 1.5`, /\[server\] keepalive.*got 1\.5/],
      [`[server]\nbind = "localhost"`, /\[server\] bind in .*host:port.*got "localhost"/],
      [`[server]\nbind = "1.2.3.4:70000"`, /\[server\] bind.*port 0\.\.65535/],
      [`[server]\nbind = "300.1.1.1:80"`, /\[server\] bind/],
      [`[server]\ntcp_bind = "::1:80"`, /\[server\] tcp_bind/],
      [
        `[server]\nauto_approve_devices = "maybe"`,
        /\[server\] auto_approve_devices.*boolean.*got "maybe"/,
      ],
      [`[server]\ndomain = "bad domain"`, /\[server\] domain.*domain name/],
      [
        `[server]\ntls_cert = "missing.pem"\ntls_key = "missing.key"`,
        /\[server\] tls_cert.*file not found/,
      ],
      [
        `[storage]\npostgres_dsn = "mysql://x@y/z"`,
        /\[storage\] postgres_dsn.*PostgreSQL URL.*scheme "mysql:"/,
      ],
      [`[storage]\nredis_url = "redis://h/abc"`, /\[storage\] redis_url.*database index/],
      [`[crypto]\nnoise_private = "abcd"`, /\[crypto\] noise_private.*64 hex characters.*got 4/],
      [`[crypto]\nnoise_private = "${"zz".repeat(32)}"`, /\[crypto\] noise_private.*hex/],
      [
        `[crypto]\nfederation_seed = "abcd"`,
        /\[crypto\] federation_seed.*16 to 1024 bytes.*got 2 bytes/,
      ],
      [
        `[crypto]\nnoise_public = "${PUB}"`,
        /noise_public is set.*without \[crypto\] noise_private/,
      ],
      [`[ledger]\nmode = "syslog"`, /\[ledger\] mode.*"null", "debug" or "file".*got "syslog"/],
      [`[ledger]\nmode = "file"`, /\[ledger\] target is not set/],
      [`[limits]\nrelay_ttl = -5`, /\[limits\] relay_ttl.*positive integer/],
      [`[limits]\nmax_inflight = "lots"`, /\[limits\] max_inflight.*frames.*got "lots"/],
      [`[admin]\ntoken = "replace-with-secret"`, /\[admin\] token.*not the sample placeholder/],
      [`[admin]\ntoken = "s3cret!token"`, /\[admin\] token.*as a bearer token must be/],
      [`[admin]\ntoken = "abc=def"`, /\[admin\] token.*as a bearer token must be/],
      [`[federation]\npeers = 5`, /\[federation\] peers.*array.*got 5/],
      [`[server]\nkeepalive = { a = 1 }`, /\[server\] keepalive.*got a table/],
      [`server = 1`, /unknown key "server"|invalid \[server\]/],
    ];
    for (const [toml, pattern] of cases) {
      const message = await refused(loadToml(dir, toml, {}));
      assert.match(message, pattern, toml);
    }
  });
});

Deno.test("bad environment values name the variable", async () => {
  const cases: [Record<string, string>, RegExp][] = [
    [
      { COMMUCAT_KEEPALIVE: "abc" },
      /invalid COMMUCAT_KEEPALIVE \(environment\): expected a positive integer number of seconds.*got "abc"/,
    ],
    [{ COMMUCAT_BIND: "nope" }, /COMMUCAT_BIND \(environment\)/],
    [{ COMMUCAT_ALLOW_PLAINTEXT_V1: "2" }, /COMMUCAT_ALLOW_PLAINTEXT_V1.*boolean/],
    [{ COMMUCAT_LEDGER: "x" }, /COMMUCAT_LEDGER \(environment\)/],
    [{ COMMUCAT_NOISE_PUBLIC: "11".repeat(32) }, /COMMUCAT_NOISE_PUBLIC/],
    [
      { COMMUCAT_FEDERATION_PEERS: "a.example,https://a.example" },
      /COMMUCAT_FEDERATION_PEERS.*three comma-separated fields/,
    ],
    [
      { COMMUCAT_TLS_CERT: "/nonexistent/c.pem" },
      /tls_cert is set \(COMMUCAT_TLS_CERT \(environment\)\) but \[server\] tls_key is not/,
    ],
  ];
  for (const [env, pattern] of cases) {
    const message = await refused(loadConfig({ env: { ...KEYS_ENV, ...env }, file: null }));
    assert.match(message, pattern, JSON.stringify(env));
  }
});

Deno.test("secret values are never echoed in errors", async () => {
  const secret = "topsecretvalue";
  const message = await refused(
    loadConfig({
      env: {
        COMMUCAT_NOISE_PRIVATE: secret,
        COMMUCAT_FEDERATION_SEED: secret,
        COMMUCAT_PG_DSN: `http://u:${secret}@h/d`,
        COMMUCAT_ADMIN_TOKEN: `a ${secret}`,
      },
      file: null,
    }),
  );
  assert.ok(!message.includes(secret), message);
  assert.match(message, /COMMUCAT_NOISE_PRIVATE/);
  assert.match(message, /COMMUCAT_FEDERATION_SEED/);
  assert.match(message, /COMMUCAT_PG_DSN/);
  assert.match(message, /COMMUCAT_ADMIN_TOKEN/);
});

Deno.test("all problems are reported together", async () => {
  const err = await loadConfig({
    env: { ...KEYS_ENV, COMMUCAT_KEEPALIVE: "x", COMMUCAT_PRESENCE_TTL: "y" },
    file: null,
  }).catch((e) => e);
  assert.ok(err instanceof ConfigError);
  assert.equal(err.problems.length, 2);
  assert.match(err.message, /COMMUCAT_KEEPALIVE/);
  assert.match(err.message, /COMMUCAT_PRESENCE_TTL/);
});

Deno.test("unknown sections and keys are refused with a suggestion", async () => {
  await inTempDir(async (dir) => {
    const key = await refused(loadToml(dir, `[server]\nkeepaliv = 60\n`));
    assert.match(key, /unknown key "keepaliv" in \[server\].*did you mean "keepalive"/);
    const section = await refused(loadToml(dir, `[limit]\npresence_ttl = 60\n`));
    assert.match(section, /unknown section "limit".*did you mean "limits"/);
    const syntax = await refused(loadToml(dir, `[server\nbind = 1`));
    assert.match(syntax, /cannot parse config file .*commucat\.toml/);
  });
});

Deno.test("federation peers: array of tables and the compact string", async () => {
  await inTempDir(async (dir) => {
    const tables = await loadToml(
      dir,
      `[federation]\npeers = [\n` +
        `  { domain = "a.example", endpoint = "https://a.example/federation", public_key = "${PEER_KEY}" },\n` +
        `  { domain = "b.example", endpoint = "http://127.0.0.1:9000/fed", public_key = "${PEER_KEY}" },\n` +
        `]\n`,
    );
    assert.deepEqual(tables.federation.peers.map((p) => [p.domain, p.endpoint]), [
      ["a.example", "https://a.example/federation"],
      ["b.example", "http://127.0.0.1:9000/fed"],
    ]);
    assert.equal(bytesToHex(tables.federation.peers[0].publicKey), PEER_KEY);

    const arrayOfTables = await loadToml(
      dir,
      `[[federation.peers]]\ndomain = "c.example"\nendpoint = "https://c.example/f"\n` +
        `public_key = "${PEER_KEY}"\n`,
    );
    assert.equal(arrayOfTables.federation.peers[0].domain, "c.example");

    const compact = await loadToml(
      dir,
      `[federation]\npeers = "remote.example,https://remote.example/federation,${PEER_KEY}; ` +
        `two.example,https://two.example/f,${PEER_KEY};"\n`,
    );
    assert.deepEqual(compact.federation.peers.map((p) => p.domain), [
      "remote.example",
      "two.example",
    ]);

    const env = await loadConfig({
      env: { ...KEYS_ENV, COMMUCAT_FEDERATION_PEERS: `e.example,https://e.example/f,${PEER_KEY}` },
      file: null,
    });
    assert.equal(env.federation.peers[0].domain, "e.example");

    const bad: [string, RegExp][] = [
      [`"x.example,http://x.example/f,${PEER_KEY}"`, /peer 1: endpoint must use https:\/\//],
      [`"x.example,https://x.example/f,abcd"`, /peer 1: public_key must be 64 hex/],
      [`"x.example,not a url,${PEER_KEY}"`, /peer 1: endpoint must be an https:\/\/ URL/],
      [`"localhost,https://l.example/f,${PEER_KEY}"`, /own domain/],
      [
        `"x.example,https://x.example/f,${PEER_KEY};x.example,https://y.example/f,${PEER_KEY}"`,
        /"x\.example" appears twice/,
      ],
      [
        `[{ domain = "x.example", endpoint = "https://x/f", public_key = "${PEER_KEY}", extra = 1 }]`,
        /peer 1: unknown key "extra"/,
      ],
      [`["x"]`, /peer 1: expected a table/],
    ];
    for (const [value, pattern] of bad) {
      const message = await refused(loadToml(dir, `[federation]\npeers = ${value}\n`));
      assert.match(message, /\[federation\] peers in .*commucat\.toml/);
      assert.match(message, pattern, value);
    }
  });
});

Deno.test("a noise_public that does not match noise_private is refused with the right key", async () => {
  await inTempDir(async (dir) => {
    // The original sample pairs unrelated values.
    const message = await refused(loadToml(
      dir,
      `[crypto]\nnoise_private = "${PRIV}"\n` +
        `noise_public = "101112131415161718191a1b1c1d1e1f101112131415161718191a1b1c1d1e1f"\n`,
      {},
    ));
    assert.match(
      message,
      /noise_public .* is not the X25519 public key of \[crypto\] noise_private/,
    );
    assert.ok(message.includes(PUB), "prints the correct public key");
    assert.ok(!message.includes(PRIV), "never prints the private key");
  });
});

Deno.test("keys are generated once with mode 0600 and reused", async () => {
  await inTempDir(async (dir) => {
    const env = { COMMUCAT_DATA_DIR: join(dir, "nested", "data") };
    const first = await loadConfig({ env, file: null, cwd: dir });
    const keyFile = join(dir, "nested", "data", KEY_FILE_NAME);
    assert.equal(first.crypto.generatedKeyFile, keyFile);
    assert.equal((await Deno.stat(keyFile)).mode! & 0o777, 0o600);
    assert.deepEqual(
      bytesToHex(first.crypto.noisePublic),
      bytesToHex(x25519.getPublicKey(first.crypto.noisePrivate)),
    );
    assert.equal(first.crypto.federationSeed.length, 32);
    const stored = JSON.parse(await Deno.readTextFile(keyFile));
    assert.equal(stored.noise_private, bytesToHex(first.crypto.noisePrivate));

    const second = await loadConfig({ env, file: null, cwd: dir });
    assert.deepEqual(second.crypto.noisePrivate, first.crypto.noisePrivate);
    assert.deepEqual(second.crypto.federationSeed, first.crypto.federationSeed);
    assert.deepEqual([...Deno.readDirSync(join(dir, "nested", "data"))].map((e) => e.name), [
      KEY_FILE_NAME,
    ]);

    // "generated keys kept in" only on the start that generated them.
    assert.match(describeKeys(first).join("\n"), /^generated keys kept in .*keys\.json/m);
    const lines = describeKeys(second);
    const text = lines.join("\n");
    assert.doesNotMatch(text, /generated keys kept in/);
    assert.match(text, /^keys read from .*keys\.json$/m);
    assert.ok(text.includes(bytesToHex(second.crypto.noisePublic)));
    assert.ok(text.includes(bytesToHex(federationKeypair(second.crypto.federationSeed).publicKey)));
    assert.ok(text.includes(keyFile));
    assert.ok(!text.includes(bytesToHex(second.crypto.noisePrivate)));
    assert.ok(!text.includes(bytesToHex(second.crypto.federationSeed)));
  });
});

Deno.test("only the missing key is generated", async () => {
  await inTempDir(async (dir) => {
    const onlyNoise = await loadConfig({
      env: { COMMUCAT_NOISE_PRIVATE: PRIV },
      file: null,
      cwd: dir,
    });
    assert.equal(bytesToHex(onlyNoise.crypto.noisePrivate), PRIV);
    assert.equal(onlyNoise.crypto.generatedKeyFile, join(dir, "data", KEY_FILE_NAME));
    const stored = JSON.parse(await Deno.readTextFile(join(dir, "data", KEY_FILE_NAME)));
    assert.equal(stored.noise_private, undefined);
    assert.equal(stored.federation_seed, bytesToHex(onlyNoise.crypto.federationSeed));

    // Later the seed gets configured and the noise key is left to the file: the file gains it.
    const onlySeed = await loadConfig({
      env: { COMMUCAT_FEDERATION_SEED: SEED },
      file: null,
      cwd: dir,
    });
    assert.equal(bytesToHex(onlySeed.crypto.federationSeed), SEED);
    const updated = JSON.parse(await Deno.readTextFile(join(dir, "data", KEY_FILE_NAME)));
    assert.equal(updated.noise_private, bytesToHex(onlySeed.crypto.noisePrivate));
    assert.equal(updated.federation_seed, stored.federation_seed);
    assert.equal((await Deno.stat(join(dir, "data", KEY_FILE_NAME))).mode! & 0o777, 0o600);
  });
});

Deno.test("concurrent first starts agree on one generated key", async () => {
  await inTempDir(async (dir) => {
    const configs = await Promise.all(
      Array.from({ length: 4 }, () => loadConfig({ env: {}, file: null, cwd: dir })),
    );
    for (const config of configs) {
      assert.deepEqual(config.crypto.noisePrivate, configs[0].crypto.noisePrivate);
      assert.deepEqual(config.crypto.federationSeed, configs[0].crypto.federationSeed);
    }
  });
});

Deno.test("a damaged key file is refused and left untouched", async () => {
  await inTempDir(async (dir) => {
    await Deno.mkdir(join(dir, "data"));
    const file = join(dir, "data", KEY_FILE_NAME);
    await Deno.writeTextFile(file, "{ not json");
    const message = await refused(loadConfig({ env: {}, file: null, cwd: dir }));
    assert.match(message, /keys\.json is damaged/);
    assert.equal(await Deno.readTextFile(file), "{ not json");
  });
});

Deno.test("the committed commucat.toml loads cleanly", async () => {
  await inTempDir(async (dir) => {
    const config = await loadConfig({
      env: { COMMUCAT_DATA_DIR: join(dir, "data") },
      file: join(REPO, "commucat.toml"),
      cwd: dir,
    });
    assert.equal(config.server.domain, "localhost");
    assert.equal(config.storage.postgresDsn, null);
    assert.equal(config.storage.redisUrl, null);
    assert.equal(config.crypto.generatedKeyFile, join(dir, "data", KEY_FILE_NAME));
  });
});

Deno.test("every key is in .env.sample, docs/CONFIG.md and the README, with its default", async () => {
  const sample = await Deno.readTextFile(join(REPO, ".env.sample"));
  const docs = await Deno.readTextFile(join(REPO, "docs/CONFIG.md"));
  const readme = await Deno.readTextFile(join(REPO, "README.md"));
  const toml = await Deno.readTextFile(join(REPO, "commucat.toml"));
  /** The default column of the key table row naming `env` (cells without backticks). */
  const documentedDefault = (text: string, env: string) =>
    text.split("\n").map((line) => line.split("|").slice(1, -1).map((c) => c.trim()))
      .find((cells) => cells.length === 5 && cells[2] === `\`${env}\``)?.[3].replaceAll("`", "");
  for (const spec of CONFIG_KEYS) {
    assert.match(sample, new RegExp(`^#?\\s*${spec.env}=`, "m"), spec.env);
    assert.ok(docs.includes(`\`${spec.env}\``), `docs: ${spec.env}`);
    assert.ok(readme.includes(`\`${spec.env}\``), `README: ${spec.env}`);
    assert.equal(documentedDefault(docs, spec.env), spec.default, `docs default: ${spec.env}`);
    assert.equal(documentedDefault(readme, spec.env), spec.default, `README default: ${spec.env}`);
    assert.match(toml, new RegExp(`^#?\\s*${spec.key} =`, "m"), `commucat.toml: ${spec.key}`);
  }
  for (const { env } of OTHER_VARIABLES) {
    assert.match(sample, new RegExp(`^#?\\s*${env}=`, "m"), env);
    assert.ok(docs.includes(`\`${env}\``), `docs: ${env}`);
  }
});

Deno.test("generateKeys returns a matching pair and a 32-byte seed", () => {
  const keys = generateKeys();
  assert.equal(
    keys.noisePublic,
    bytesToHex(
      x25519.getPublicKey(hexToBytes(keys.noisePrivate)),
    ),
  );
  assert.match(keys.federationSeed, /^[0-9a-f]{64}$/);
});

Deno.test("unknown COMMUCAT_* variables are warned about, with a suggestion", async () => {
  const { unknownVariableWarnings } = await import("../../server/config/mod.ts");
  assert.deepEqual(
    unknownVariableWarnings({
      COMMUCAT_KEEPALIVES: "60",
      COMMUCAT_BIND: "127.0.0.1:0",
      COMMUCAT_TEST_PG_DSN: "x",
      COMMUCAT_ZZZ_TOTALLY_DIFFERENT: "1",
      PATH: "/bin",
    }),
    [
      'warning: unknown environment variable COMMUCAT_KEEPALIVES (did you mean "COMMUCAT_KEEPALIVE"?); it is ignored',
      "warning: unknown environment variable COMMUCAT_ZZZ_TOTALLY_DIFFERENT; it is ignored",
    ],
  );
});
