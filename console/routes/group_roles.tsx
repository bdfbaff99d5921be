// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/**
 * Group roles from the console: set a member's role (member, admin, co-owner) and transfer a
 * group's ownership. The operator acts under the same rules as devices (storage/group_roles.ts):
 * a group always keeps an owner, so the last owner is demoted or removed only after naming
 * another. Every change is in the group's membership trail and the operator audit log.
 */
import type { Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import { actorOf, adminFor } from "../actions.ts";
import { attempt, flash, renderPage, seeOther } from "../render.tsx";
import { PostForm } from "../components/forms.tsx";
import { PageError } from "../middleware/errors.tsx";
import type { GroupRole } from "../../storage/types.ts";

const ROLES: readonly GroupRole[] = ["member", "admin", "owner"];
const groupPath = (id: string) => `/groups/${encodeURIComponent(id)}`;
export const rolePath = (groupId: string, deviceId: string) =>
  `${groupPath(groupId)}/members/${encodeURIComponent(deviceId)}/role`;
const transferPath = (groupId: string, deviceId: string) =>
  `${groupPath(groupId)}/members/${encodeURIComponent(deviceId)}/transfer`;

export function register(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  app.get("/groups/:id/members/:device/role", async (c) => {
    const id = c.req.param("id");
    const deviceId = c.req.param("device");
    const roster = await deps.storage.groups.roster(id);
    const me = roster.find((m) => m.deviceId === deviceId);
    if (!me) {
      throw new PageError(404, "Not a member", `device “${deviceId}” is not in group “${id}”`);
    }
    const owners = roster.filter((m) => m.role === "owner").length;
    const others = roster.filter((m) => m.deviceId !== deviceId);
    const csrf = c.get("session")!.csrf;
    return renderPage(c, deps, { title: "Group role", active: "groups" }, [
      <PostForm action={rolePath(id, deviceId)} csrf={csrf} class="confirm">
        <p>
          Device <code>{deviceId}</code> is <strong>{me.role}</strong> of group <code>{id}</code>
          {" "}
          ({owners} {owners === 1 ? "owner" : "owners"}).
        </p>
        <label for="role">New role</label>
        <select id="role" name="role">
          {ROLES.map((r) => (
            <option value={r} selected={r === me.role}>
              {r === "owner" ? "owner (co-owner)" : r}
            </option>
          ))}
        </select>
        {me.role === "owner" && owners === 1 && (
          <p class="muted">
            The last owner keeps the role until another member is made an owner: transfer the
            ownership below.
          </p>
        )}
        <div class="form-actions">
          <button type="submit">Set role</button>
          <a href={groupPath(id)}>Cancel</a>
        </div>
      </PostForm>,
      me.role === "owner" && others.length > 0 && (
        <PostForm action={transferPath(id, deviceId)} csrf={csrf} class="confirm">
          <h2>Transfer ownership</h2>
          <label for="successor">New owner</label>
          <select id="successor" name="successor">
            {others.map((m) => <option value={m.deviceId}>{m.deviceId} ({m.role})</option>)}
          </select>
          <label>
            <input type="checkbox" name="leave" value="yes" /> and remove {deviceId} from the group
            {" "}
            (otherwise it stays as admin)
          </label>
          <div class="form-actions">
            <button type="submit" class="danger">Transfer</button>
          </div>
        </PostForm>
      ),
    ]);
  });

  app.post("/groups/:id/members/:device/role", async (c) => {
    const id = c.req.param("id");
    const deviceId = c.req.param("device");
    const form = await c.req.parseBody();
    const role = String(form.role ?? "");
    if (!(ROLES as readonly string[]).includes(role)) {
      flash(c, "error", `Nothing changed: the role must be one of ${ROLES.join(", ")}.`);
      return seeOther(c, rolePath(id, deviceId));
    }
    const actor = actorOf(c.get("session")!.label);
    const done = await attempt(c, "Nothing changed", async () => {
      const set = await adminFor(deps.storage, actor).setGroupRole(id, deviceId, role as GroupRole);
      if (set.changed) {
        deps.log.info("console: group role set", {
          operator: actor,
          group: id,
          device: deviceId,
          role,
        });
      }
      flash(c, "ok", `Device ${deviceId} is ${set.role} of ${id}.`);
    });
    return seeOther(c, done ? groupPath(id) : rolePath(id, deviceId));
  });

  app.post("/groups/:id/members/:device/transfer", async (c) => {
    const id = c.req.param("id");
    const deviceId = c.req.param("device");
    const form = await c.req.parseBody();
    const successor = String(form.successor ?? "");
    const leave = form.leave === "yes";
    const actor = actorOf(c.get("session")!.label);
    const done = await attempt(c, "Nothing changed", async () => {
      await adminFor(deps.storage, actor).transferGroupOwnership(id, deviceId, successor, leave);
      deps.log.info("console: group ownership transferred", {
        operator: actor,
        group: id,
        from: deviceId,
        to: successor,
        leave,
      });
      flash(c, "ok", `${successor} owns ${id} now${leave ? `; ${deviceId} was removed` : ""}.`);
    });
    return seeOther(c, done ? groupPath(id) : rolePath(id, deviceId));
  });
}
