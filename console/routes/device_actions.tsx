// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/**
 * Approve, reject and revoke. Each action has a confirmation page (GET) whose form does the
 * change (POST with the CSRF token and `confirm=yes`), so it works without JavaScript.
 */
import type { Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import type { Device } from "../../storage/types.ts";
import { actorOf, approveDevice, rejectDevice, revokeDevice } from "../actions.ts";
import { attempt, flash, renderPage, seeOther } from "../render.tsx";
import { PostForm } from "../components/forms.tsx";
import { Badge } from "../components/table.tsx";
import { hex, href } from "../components/format.ts";
import { PageError } from "../middleware/errors.tsx";
import { safeNext } from "../middleware/guard.tsx";

export type DeviceAction = "approve" | "reject" | "revoke";

const ACTIONS: Record<DeviceAction, { verb: string; explain: (d: Device) => string }> = {
  approve: {
    verb: "Approve",
    explain: (d) =>
      d.status === "pending"
        ? "The device's next handshake will succeed and it can send and receive messages."
        : "The device's new key replaces its current one; its next handshake uses the new key.",
  },
  reject: {
    verb: "Reject",
    explain: (d) =>
      d.status === "pending"
        ? "The device is refused for good (it becomes revoked) and cannot connect."
        : "The waiting new key is dropped; the device keeps its current key.",
  },
  revoke: {
    verb: "Revoke",
    explain: () =>
      "The device's live connections end on every node and it can no longer connect. " +
      "This cannot be undone.",
  },
};

/** The actions that make sense for a device in its current state. */
export function actionsFor(d: Pick<Device, "status" | "pendingPublicKey">): DeviceAction[] {
  if (d.status === "pending") return ["approve", "reject"];
  if (d.status === "active") {
    return d.pendingPublicKey ? ["approve", "reject", "revoke"] : ["revoke"];
  }
  return [];
}

/** Links to the confirmation pages of a device's possible actions. */
export function DeviceActions(
  props: { device: Pick<Device, "id" | "status" | "pendingPublicKey">; back: string },
) {
  const actions = actionsFor(props.device);
  if (actions.length === 0) return <span class="muted">—</span>;
  return (
    <span class="actions">
      {actions.map((a) => (
        <a
          class={`button small ${a === "approve" ? "primary" : "danger"}`}
          href={href(`/devices/${encodeURIComponent(props.device.id)}/${a}`, { back: props.back })}
          aria-label={`${ACTIONS[a].verb} device ${props.device.id}`}
        >
          {ACTIONS[a].verb}
          {props.device.status === "active" && a !== "revoke" ? " key" : ""}
        </a>
      ))}
    </span>
  );
}

function parseAction(value: string): DeviceAction {
  if (value === "approve" || value === "reject" || value === "revoke") return value;
  throw new PageError(404, "Not found", `there is no device action “${value}”`);
}

export function register(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  app.get("/devices/:id/:action{approve|reject|revoke}", async (c) => {
    const id = c.req.param("id");
    const action = parseAction(c.req.param("action"));
    const device = await deps.storage.devices.get(id);
    if (!device) throw new PageError(404, "Device not found", `no device has the id “${id}”`);
    const back = safeNext(c.req.query("back") ?? `/devices/${encodeURIComponent(id)}`);
    const session = c.get("session")!;
    const possible = actionsFor(device).includes(action);
    const info = ACTIONS[action];
    return renderPage(c, deps, { title: `${info.verb} device`, active: "devices" }, [
      <dl class="facts">
        <dt>Device</dt>
        <dd>
          <code>{device.id}</code>
        </dd>
        <dt>Status</dt>
        <dd>
          <Badge value={device.status} />
        </dd>
        <dt>Key</dt>
        <dd>
          <code class="key">{hex(device.publicKey)}</code>
        </dd>
        {device.pendingPublicKey && (
          <>
            <dt>New key waiting</dt>
            <dd>
              <code class="key">{hex(device.pendingPublicKey)}</code>
            </dd>
          </>
        )}
      </dl>,
      possible
        ? (
          <PostForm
            action={`/devices/${encodeURIComponent(id)}/${action}`}
            csrf={session.csrf}
            class="confirm"
          >
            <input type="hidden" name="confirm" value="yes" />
            <input type="hidden" name="back" value={back} />
            <p>{info.explain(device)}</p>
            <div class="form-actions">
              <button type="submit" class={action === "approve" ? "primary" : "danger"}>
                {info.verb} {device.id}
              </button>
              <a href={back}>Cancel</a>
            </div>
          </PostForm>
        )
        : (
          <p class="flash error" role="alert">
            A {device.status} device cannot be {action === "approve" ? "approved" : `${action}ed`}.
            {" "}
            <a href={back}>Back</a>
          </p>
        ),
    ]);
  });

  app.post("/devices/:id/:action{approve|reject|revoke}", async (c) => {
    const id = c.req.param("id");
    const action = parseAction(c.req.param("action"));
    const form = await c.req.parseBody();
    const back = safeNext(typeof form.back === "string" ? form.back : null);
    const confirmPage = href(`/devices/${encodeURIComponent(id)}/${action}`, { back });
    if (form.confirm !== "yes") return seeOther(c, confirmPage);
    const actor = actorOf(c.get("session")!.label);
    // A refused transition (already revoked, not pending…) is flashed, not a crash.
    await attempt(c, `Device ${id} was not changed`, async () => {
      const run = { approve: approveDevice, reject: rejectDevice, revoke: revokeDevice }[action];
      const device = await run(deps.storage, actor, id);
      deps.log.info("console: device " + action, { operator: actor, device: id });
      flash(c, "ok", `Device ${id} is now ${device.status}.`);
    });
    return seeOther(c, back === "/" ? `/devices/${encodeURIComponent(id)}` : back);
  });
}
