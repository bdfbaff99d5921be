/**
 * Telling running servers about an operator change over the ephemeral bus: the interrupt key
 * and the control event. The durable change is already committed when this runs, so a Redis
 * failure here says so before it is reported.
 */
import type { CliContext } from "../context.ts";
import type { ControlEvent, Storage } from "../../storage/mod.ts";

/** How long an interrupt key lives: long enough for every node to notice it. */
export const INTERRUPT_TTL_SECONDS = 120;

/** Publishes `event` (and sets the interrupt key first when `interrupt` is given). */
export async function notifyNodes(
  ctx: CliContext,
  storage: Storage,
  done: string,
  event: ControlEvent,
  interrupt?: { deviceId: string; reason: string },
): Promise<void> {
  try {
    if (interrupt) {
      await storage.ephemeral.setInterrupt(
        interrupt.deviceId,
        interrupt.reason,
        INTERRUPT_TTL_SECONDS,
      );
    }
    await storage.ephemeral.publishControl(event);
  } catch (err) {
    ctx.note(`note: ${done} in the database, but running servers could not be told:`);
    throw err;
  }
  if (!(await ctx.sharesBus())) {
    ctx.note(
      "note: no [storage] redis_url is configured, so running servers were not told; " +
        "they see the change at the device's next handshake",
    );
  }
}
