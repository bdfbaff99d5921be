/** `[retention]`: defaults, a directory, an S3 bucket, and every wrong value reported. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, loadConfig } from "../../server/config/mod.ts";

const KEYS_ENV = {
  COMMUCAT_NOISE_PRIVATE: "000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f",
  COMMUCAT_FEDERATION_SEED: "202122232425262728292a2b2c2d2e2f202122232425262728292a2b2c2d2e2f",
};

async function load(toml: string, env: Record<string, string> = {}) {
  const dir = await Deno.makeTempDir({ prefix: "commucat_retention_" });
  try {
    const file = join(dir, "commucat.toml");
    await Deno.writeTextFile(file, toml);
    return { dir, config: await loadConfig({ env: { ...KEYS_ENV, ...env }, file, cwd: dir }) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function refused(toml: string, env: Record<string, string> = {}): Promise<string> {
  try {
    await load(toml, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.message;
  }
  assert.fail("accepted");
}

Deno.test("[retention] defaults: 365 days, a directory under data_dir, hourly", async () => {
  const { dir, config } = await load("");
  assert.deepEqual(config.retention, {
    keyEventsDays: 365,
    interval: 3600,
    chunkEvents: 10_000,
    archive: { kind: "dir", path: join(dir, "data", "archive") },
  });
});

Deno.test("[retention] a relative directory is resolved; 0 days keeps events", async () => {
  const { dir, config } = await load(`[retention]\nkey_events_days = 0\narchive = "arch"\n`);
  assert.equal(config.retention.keyEventsDays, 0);
  assert.deepEqual(config.retention.archive, { kind: "dir", path: join(dir, "arch") });
});

Deno.test("[retention] an S3 bucket with prefix, endpoint and keys", async () => {
  const { config } = await load(
    `[retention]\narchive = "s3://commucat-archive/relay-1/"\n` +
      `s3_endpoint = "https://s3.example.org/"\ns3_region = "eu-west-1"\n` +
      `s3_access_key_id = "AKID"\n`,
    { COMMUCAT_RETENTION_S3_SECRET_ACCESS_KEY: "very-secret" },
  );
  assert.deepEqual(config.retention.archive, {
    kind: "s3",
    bucket: "commucat-archive",
    prefix: "relay-1/",
    endpoint: "https://s3.example.org",
    region: "eu-west-1",
    accessKeyId: "AKID",
    secretAccessKey: "very-secret",
  });
});

Deno.test("[retention] S3 without endpoint or keys, a bad bucket, http off loopback", async () => {
  let msg = await refused(`[retention]\narchive = "s3://bucket"\n`);
  assert.match(
    msg,
    /\[retention\] s3_endpoint, \[retention\] s3_access_key_id, \[retention\] s3_secret_access_key are not set/,
  );
  msg = await refused(`[retention]\narchive = "s3://B_ad"\n`);
  assert.match(msg, /expected s3:\/\/bucket\[\/prefix\]/);
  msg = await refused(
    `[retention]\narchive = "s3://bucket"\ns3_endpoint = "http://s3.example.org"\n` +
      `s3_access_key_id = "a"\ns3_secret_access_key = "hidden-value"\n`,
  );
  assert.match(msg, /http:\/\/ is allowed only for loopback/);
  assert.doesNotMatch(msg, /hidden-value/);
  msg = await refused(`[retention]\nkey_events_days = -1\nchunk_events = 0\ninterval = "x"\n`);
  assert.match(msg, /key_events_days/);
  assert.match(msg, /chunk_events/);
  assert.match(msg, /interval/);
  msg = await refused(`[retention]\narchiv = "x"\n`);
  assert.match(msg, /did you mean "archive"/);
});
