/**
 * `rotate-keys`: gives a user's device a fresh X25519 key. A new device is registered active;
 * an existing one has its key replaced. The key event and the audit entry are written by
 * storage in the same transaction; the ledger record follows. The private key is printed once
 * and stored nowhere.
 */
import { parseCommand, stringFlag, UsageError } from "../args.ts";
import type { Command } from "../command.ts";
import { keyValues } from "../format.ts";
import { RemoteAdmin } from "../../admin/remote.ts";

const usage = "rotate-keys (--user ID | --handle H) [--device ID]";

export const rotateKeysCommand: Command = {
  name: "rotate-keys",
  summary: "generate a device key for a user (new device, or rotate an existing one)",
  usage,
  help: `Generates an X25519 key pair for a user's device. Without --device a new device is
registered (active) under a generated id; with --device an existing device of that user gets
the new key (its old key stops working), or a device with that id is registered. Writes the
key event (same transaction), a ledger record and an audit entry. Prints user_id, device_id,
public_key and private_key (hex). The private key is shown only this once: hand it to the
device's owner over a safe channel.

Options:
  --user ID     the user's id
  --handle H    the user's handle (instead of --user)
  --device ID   the device to (re)key; default: a new device

Example:
  deno task cli rotate-keys --handle alice --device laptop-01`,
  async run(argv, ctx) {
    const args = parseCommand(argv, {
      usage,
      flags: {
        user: { type: "string" },
        handle: { type: "string" },
        device: { type: "string" },
      },
    });
    const userId = stringFlag(args, "user");
    const handle = stringFlag(args, "handle");
    if ((userId === undefined) === (handle === undefined)) {
      throw new UsageError("give exactly one of --user or --handle", usage);
    }
    const deviceId = stringFlag(args, "device");
    const admin = await ctx.admin();
    // A bad ledger configuration fails here, before a key is made.
    if (!(admin instanceof RemoteAdmin)) await ctx.ledger();
    const r = await admin.rotateKey({ userId, handle, deviceId });
    // The key is stored: show it before anything else can fail, or it would be lost.
    ctx.out(keyValues([
      ["user_id", r.userId],
      ["device_id", r.deviceId],
      ["public_key", r.publicKey],
      ["private_key", r.privateKey],
    ]));
    ctx.note("the private key is not stored anywhere: keep it now, it cannot be shown again");
    for (const note of r.notes) ctx.note(`note: ${note}`);
    if (r.notes.some((n) => n.startsWith("the ledger record failed"))) return 1;
    return 0;
  },
};
