/** `gen-keys`: prints a fresh `[crypto]` section; touches no database and no file. */
import { parseCommand, stringFlag } from "../args.ts";
import type { Command } from "../command.ts";
import { generateKeys } from "../../server/config/mod.ts";
import { federationKeypair } from "../../protocol/federation.ts";
import { bytesToHex, hexToBytes } from "../../protocol/hex.ts";

const usage = "gen-keys [--prologue TEXT]";

export const genKeysCommand: Command = {
  name: "gen-keys",
  summary: "print a fresh [crypto] section for commucat.toml",
  usage,
  help: `Generates a new X25519 Noise static key pair and a federation seed and prints them as a
[crypto] TOML section to paste into commucat.toml (or to keep in a secrets store). Nothing is
written anywhere. The federation public key (Ed25519) is printed as a comment, for peers.

Options:
  --prologue TEXT   Noise prologue to write (default "commucat"; clients must agree)

Example:
  deno task cli gen-keys > crypto.toml`,
  run(argv, ctx) {
    const args = parseCommand(argv, { usage, flags: { prologue: { type: "string" } } });
    const prologue = stringFlag(args, "prologue") ?? "commucat";
    const keys = generateKeys();
    const fedPublic = federationKeypair(hexToBytes(keys.federationSeed)).publicKey;
    const hex = bytesToHex(fedPublic);
    ctx.out(
      [
        "[crypto]",
        `noise_private = "${keys.noisePrivate}"`,
        `noise_public = "${keys.noisePublic}"`,
        `federation_seed = "${keys.federationSeed}"`,
        `prologue = ${JSON.stringify(prologue)}`,
        `# federation public key (Ed25519), give it to peers: ${hex}`,
      ].join("\n"),
    );
    return Promise.resolve(0);
  },
};
