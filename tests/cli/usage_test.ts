/**
 * Help and usage errors, as separate processes. None of these touch a database, so they run
 * side by side; they start in an empty temp dir with a data dir that must stay untouched.
 */
import assert from "node:assert/strict";
import { parse as parseToml } from "smol-toml";
import { x25519 } from "@noble/curves/ed25519.js";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { cli, show } from "./run.ts";
import { COMMANDS } from "../../cli/mod.ts";
import { loadConfig } from "../../server/config/mod.ts";

/** Runs `n` at a time: enough to overlap process start-up without starving two cores. */
async function inBatches<T, R>(items: T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += n) {
    out.push(...await Promise.all(items.slice(i, i + n).map(fn)));
  }
  return out;
}

const dir = await Deno.makeTempDir({ prefix: "commucat-cli-usage-" });
const env = { COMMUCAT_DATA_DIR: `${dir}/data` };

Deno.test("cli --help on every command, help and --help print usage and exit 0", async () => {
  const cases: string[][] = [
    ["help"],
    ["--help"],
    ["-h"],
    ["help", "rotate-keys"],
    ...COMMANDS.map((c) => [c.name, "--help"]),
    ["devices", "--status", "bogus", "--help"],
    ["devices", "--awaiting", "--help"],
    ["peers", "add", "--help"],
    ["groups", "show", "-h"],
  ];
  const results = await inBatches(cases, 6, (args) => cli(args, env, dir));
  for (const [i, args] of cases.entries()) {
    const r = results[i];
    assert.equal(r.code, 0, show(args, r));
    assert.equal(r.stderr, "", show(args, r));
    const name = args[0] === "help" && args[1] ? args[1] : args[0];
    const command = COMMANDS.find((c) => c.name === name);
    if (command) {
      assert.ok(r.stdout.startsWith(`usage: deno task cli ${command.name}`), show(args, r));
      assert.match(r.stdout, /Examples?:\n {2}deno task cli /, show(args, r));
    } else {
      assert.match(r.stdout, /^usage: deno task cli <command>/);
      for (const c of COMMANDS) assert.ok(r.stdout.includes(`  ${c.name} `), c.name);
    }
  }
  const devicesHelp = results[cases.findIndex((a) => a[0] === "devices" && a[1] === "--awaiting")];
  assert.match(devicesHelp.stdout, /\[--awaiting\]/, "the usage line names --awaiting");
  assert.match(devicesHelp.stdout, /new key waiting\s+for approval/, "the help says what waits");
  assert.match(devicesHelp.stdout, /deno task cli devices --awaiting\n/);
  // Help never opens the database.
  await assert.rejects(Deno.stat(`${dir}/data/pg`), Deno.errors.NotFound);
});

Deno.test("cli usage errors exit 2 with a one-line usage hint", async () => {
  const cases: [string[], RegExp][] = [
    [[], /^usage: deno task cli <command>/m],
    [["frobnicate"], /unknown command "frobnicate"\n/],
    [["devcies"], /unknown command "devcies"; did you mean "devices"\?/],
    [["aprove-device", "x"], /did you mean "approve-device"\?/],
    [["--server", "not-a-url", "devices"], /--server needs a URL/],
    [["help", "frobnicate"], /unknown command "frobnicate"/],
    [["migrate", "now"], /unexpected argument "now"/],
    [["register-user"], /missing <handle>/],
    [["register-user", "a", "b", "c", "d"], /unexpected argument "d"/],
    [["register-user", "alice", "--admin"], /unknown option --admin/],
    [["rotate-keys"], /give exactly one of --user or --handle/],
    [["rotate-keys", "--user", "u", "--handle", "h"], /give exactly one of --user or --handle/],
    [["rotate-keys", "--user"], /option --user needs a value/],
    [
      ["devices", "--status", "sleeping"],
      /invalid status "sleeping": expected pending, active, revoked/,
    ],
    [["devices", "--limit", "0"], /invalid limit "0": expected an integer from 1 to 500/],
    [["devices", "--limit", "ten"], /invalid limit "ten"/],
    [["devices", "--format", "xml"], /invalid format "xml"/],
    [["devices", "--bogus"], /unknown option --bogus/],
    [["devices", "--awaiting=yes"], /option --awaiting takes no value/],
    [["devices", "--awaiting", "--status", "waiting"], /invalid status "waiting"/],
    [["approve-device"], /missing <device_id>/],
    [["reject-device", "a", "b"], /unexpected argument "b"/],
    [["revoke-device"], /missing <device_id>/],
    [["key-events"], /missing <device_id>/],
    [["key-events", "d", "--format", "xml"], /invalid format "xml": expected text, json, csv/],
    [["key-events", "d", "--from", "yesterday"], /invalid --from "yesterday"/],
    [["peers"], /missing subcommand: list, add, set-status, retry, dead or replay/],
    [["peers", "remove", "x"], /unknown subcommand "remove"/],
    [["peers", "add", "a.org", "https://a.org"], /missing <hexkey>/],
    [["peers", "add", "a.org", "https://a.org", "zz"], /invalid hexkey "zz": expected 64 hex/],
    [["peers", "set-status", "a.org", "friendly"], /invalid status "friendly"/],
    [["groups"], /missing subcommand: list, show or remove-member/],
    [["groups", "show"], /missing <group_id>/],
    [["groups", "list", "--limit", "501"], /invalid limit "501"/],
    [["gen-keys", "extra"], /unexpected argument "extra"/],
    [["diagnose", "--verbose"], /unknown option --verbose/],
  ];
  const results = await inBatches(cases, 6, ([args]) => cli(args, env, dir));
  for (const [i, [args, message]] of cases.entries()) {
    const r = results[i];
    assert.equal(r.code, 2, show(args, r));
    assert.equal(r.stdout, "", show(args, r));
    assert.match(r.stderr, message, show(args, r));
    assert.match(r.stderr, /^usage: deno task cli /m, show(args, r));
  }
  await assert.rejects(Deno.stat(`${dir}/data/pg`), Deno.errors.NotFound);
});

Deno.test("cli gen-keys prints a [crypto] section the config loader accepts", async () => {
  const [a, b] = await Promise.all([cli(["gen-keys"], env, dir), cli(["gen-keys"], env, dir)]);
  assert.equal(a.code, 0, show(["gen-keys"], a));
  const table = parseToml(a.stdout) as { crypto: Record<string, string> };
  const crypto = table.crypto;
  assert.match(crypto.noise_private, /^[0-9a-f]{64}$/);
  assert.equal(
    bytesToHex(x25519.getPublicKey(hexToBytes(crypto.noise_private))),
    crypto.noise_public,
  );
  assert.match(crypto.federation_seed, /^[0-9a-f]{64}$/);
  assert.equal(crypto.prologue, "commucat");
  assert.notEqual(
    parseToml(b.stdout) && (parseToml(b.stdout) as typeof table).crypto.noise_private,
    crypto.noise_private,
  );

  const file = `${dir}/crypto.toml`;
  await Deno.writeTextFile(file, a.stdout);
  const config = await loadConfig({ file, env: {}, cwd: dir });
  assert.equal(bytesToHex(config.crypto.noisePublic), crypto.noise_public);
  assert.equal(config.crypto.generatedKeyFile, null);

  const custom = await cli(["gen-keys", "--prologue", 'my "app"'], env, dir);
  assert.equal((parseToml(custom.stdout) as typeof table).crypto.prologue, 'my "app"');
});

Deno.test("cli usage: clean up", async () => {
  await Deno.remove(dir, { recursive: true });
});
