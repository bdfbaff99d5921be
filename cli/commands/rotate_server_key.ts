/**
 * `rotate-server-key`: the two steps of a server Noise key rotation, printed as the [crypto]
 * lines to put in place; touches no database and no file (docs/OPERATIONS.md "Server key
 * rotation").
 */
import { x25519 } from "@noble/curves/ed25519.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { intValue, parseCommand, stringFlag } from "../args.ts";
import type { Command } from "../command.ts";

const usage = "rotate-server-key [--grace HOURS]";

export const rotateServerKeyCommand: Command = {
  name: "rotate-server-key",
  summary: "print the [crypto] lines of the next step of a server key rotation",
  usage,
  help: `A server key rotation takes two steps, each a configuration change and a restart (of every
node, with the same [crypto] values):
  1. announce: with no [crypto] noise_next set, this prints a fresh noise_next. Servers then
     accept it and list it as "next" in the signed key catalog (GET /.well-known/commucat),
     so clients can learn it before it is needed.
  2. switch: with noise_next set, this prints noise_private = the next key, noise_previous =
     the current key with noise_previous_not_after = now + --grace hours (default 48), and no
     noise_next. Clients that still use the old key connect until the grace window ends.
Private keys are printed: keep the output out of logs and shared terminals.

Example:
  deno task cli rotate-server-key --grace 48`,
  async run(argv, ctx) {
    const args = parseCommand(argv, { usage, flags: { grace: { type: "string" } } });
    const graceText = stringFlag(args, "grace");
    const grace = graceText === undefined ? 48 : intValue("grace", graceText, 1, 8760, usage);
    const config = await ctx.config();
    const c = config.crypto;
    if (!c.noiseNext) {
      const fresh = x25519.utils.randomSecretKey();
      ctx.out([
        "# step 1 of 2 (announce): add to [crypto] on every node, restart, wait for clients to",
        "# fetch the catalog; then run rotate-server-key again.",
        "[crypto]",
        `noise_next = "${bytesToHex(fresh)}"`,
        `# next public key: ${bytesToHex(x25519.getPublicKey(fresh))}`,
      ].join("\n"));
      return 0;
    }
    const notAfter = new Date(Date.now() + grace * 3_600_000).toISOString();
    ctx.out([
      "# step 2 of 2 (switch): replace these [crypto] keys on every node (remove noise_next and",
      "# noise_public), then restart.",
      "[crypto]",
      `noise_private = "${bytesToHex(c.noiseNext)}"`,
      `noise_previous = "${bytesToHex(c.noisePrivate)}"`,
      `noise_previous_not_after = "${notAfter}"`,
      `# current public key: ${bytesToHex(x25519.getPublicKey(c.noiseNext))}`,
      `# previous public key (accepted until ${notAfter}): ${bytesToHex(c.noisePublic)}`,
    ].join("\n"));
    return 0;
  },
};
