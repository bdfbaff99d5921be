/**
 * `rotate-keys`: gives a user's device a fresh X25519 key. A new device is registered active;
 * an existing one has its key replaced. The key event is written by storage in the same
 * transaction; the ledger record and the audit entry follow. The private key is printed once
 * and stored nowhere.
 */
import { parseCommand, stringFlag, UsageError } from "../args.ts";
import type { Command } from "../command.ts";
import { CliFailure } from "../context.ts";
import { hex, keyValues } from "../format.ts";
import { generateKeypair } from "../../protocol/noise.ts";
import { type DeviceKeyEvent, NotFound, type User } from "../../storage/mod.ts";

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
    const storage = await ctx.storage();
    const ledger = await ctx.ledger();

    let user: User | null;
    if (userId !== undefined) {
      user = await storage.users.get(userId);
      if (!user) throw new NotFound("user", userId);
    } else {
      user = await storage.users.getByHandle(handle!);
      if (!user) throw new NotFound("user with handle", handle!);
    }

    const keys = generateKeypair();
    const existing = deviceId === undefined ? null : await storage.devices.get(deviceId);
    if (existing && existing.userId !== user.id) {
      throw new CliFailure(
        `device ${JSON.stringify(existing.id)} belongs to another user (${existing.userId}), ` +
          `not to ${user.id}`,
      );
    }
    let event: DeviceKeyEvent;
    let id: string;
    if (existing) {
      ({ event } = await storage.devices.rotateKey(existing.id, keys.publicKey, ctx.actor));
      id = existing.id;
    } else {
      id = deviceId ?? crypto.randomUUID();
      ({ event } = await storage.devices.register(
        { id, userId: user.id, publicKey: keys.publicKey, status: "active" },
        ctx.actor,
      ));
    }
    // The key is stored: show it before anything else can fail, or it would be lost.
    ctx.out(keyValues([
      ["user_id", user.id],
      ["device_id", id],
      ["public_key", hex(keys.publicKey)],
      ["private_key", hex(keys.privateKey)],
    ]));
    ctx.note("the private key is not stored anywhere: keep it now, it cannot be shown again");
    await storage.audit.append({
      actor: ctx.actor,
      action: existing ? "device.rotate-key" : "device.register",
      target: `device:${id}`,
      before: existing ? { status: existing.status, publicKey: hex(existing.publicKey) } : null,
      after: { status: "active", publicKey: hex(keys.publicKey) },
    });
    await ledger.record("device_key_event", {
      device_id: id,
      user_id: user.id,
      kind: event.kind,
      event_id: event.eventId,
      public_key: event.publicKey,
      actor: event.actor,
      recorded_at: event.recordedAt,
    });
    return 0;
  },
};
