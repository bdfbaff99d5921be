// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/** Groups: list, roster with roles, removing a member, and the membership audit trail. */
import type { Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import { actorOf, removeGroupMember } from "../actions.ts";
import { attempt, flash, renderPage, seeOther } from "../render.tsx";
import { Badge, Table } from "../components/table.tsx";
import { PagedTable, Pagination } from "../components/pagination.tsx";
import { Field, FilterForm, PostForm } from "../components/forms.tsx";
import { Empty } from "../components/empty.tsx";
import { when } from "../components/format.ts";
import { PageError } from "../middleware/errors.tsx";
import { parseText } from "../validate.ts";
import { rolePath } from "./group_roles.tsx";

const groupPath = (id: string) => `/groups/${encodeURIComponent(id)}`;
const removePath = (groupId: string, deviceId: string) =>
  `${groupPath(groupId)}/members/${encodeURIComponent(deviceId)}/remove`;

export function register(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  app.get("/groups", async (c) => {
    const search = parseText(c.req.query("q"));
    const cursor = c.req.query("cursor") || null;
    const page = await deps.storage.groups.list({ search: search ?? undefined, cursor, limit: 50 });
    return renderPage(c, deps, { title: "Groups", active: "groups" }, [
      <FilterForm action="/groups" label="Search groups" clear={!!search}>
        <Field name="q" label="Group id contains" value={search} type="search" />
      </FilterForm>,
      <PagedTable
        caption="Groups"
        page={page}
        columns={[
          { label: "Group", cell: (g) => <a href={groupPath(g.id)}>{g.id}</a> },
          {
            label: "Owner device",
            cell: (g) => (
              <a href={`/devices/${encodeURIComponent(g.ownerDeviceId)}`}>
                {g.ownerDeviceId}
              </a>
            ),
          },
          { label: "Members", cell: (g) => String(g.memberCount), numeric: true },
          { label: "Relay", cell: (g) => (g.relay ? "yes" : "no") },
          { label: "Created", cell: (g) => when(g.createdAt) },
        ]}
        path="/groups"
        params={{ q: search }}
        cursor={cursor}
        empty={<Empty title={search ? "No group matches." : "No groups yet."} />}
      />,
    ]);
  });

  app.get("/groups/:id", async (c) => {
    const id = c.req.param("id");
    const cursor = c.req.query("cursor") || null;
    const group = await deps.storage.groups.get(id);
    if (!group) throw new PageError(404, "Group not found", `no group has the id “${id}”`);
    const [roster, trail] = await Promise.all([
      deps.storage.groups.roster(id),
      deps.storage.groups.auditTrail(id, { cursor, limit: 25 }),
    ]);
    return renderPage(c, deps, { title: `Group ${id}`, active: "groups" }, [
      <dl class="facts">
        <dt>Owner device</dt>
        <dd>
          <a href={`/devices/${encodeURIComponent(group.ownerDeviceId)}`}>{group.ownerDeviceId}</a>
        </dd>
        <dt>Relay</dt>
        <dd>{group.relay ? "yes: messages to offline members wait in the relay queue" : "no"}</dd>
        <dt>Created</dt>
        <dd>{when(group.createdAt)}</dd>
      </dl>,
      <section aria-labelledby="roster-title">
        <h2 id="roster-title">Roster ({roster.length})</h2>
        {roster.length
          ? (
            <Table
              caption={`Members of ${id}`}
              rows={roster}
              columns={[
                {
                  label: "Device",
                  cell: (m) => (
                    <a href={`/devices/${encodeURIComponent(m.deviceId)}`}>{m.deviceId}</a>
                  ),
                },
                { label: "Role", cell: (m) => <Badge value={m.role} /> },
                { label: "Joined", cell: (m) => when(m.joinedAt) },
                {
                  label: "Actions",
                  cell: (m) => (
                    <>
                      <a
                        class="button small"
                        href={rolePath(id, m.deviceId)}
                        aria-label={`Change the role of ${m.deviceId} in ${id}`}
                      >
                        Role
                      </a>{" "}
                      <a
                        class="button small danger"
                        href={removePath(id, m.deviceId)}
                        aria-label={`Remove ${m.deviceId} from ${id}`}
                      >
                        Remove
                      </a>
                    </>
                  ),
                },
              ]}
            />
          )
          : <Empty title="This group has no members." />}
      </section>,
      <section aria-labelledby="trail-title">
        <h2 id="trail-title">Membership audit trail</h2>
        {trail.items.length
          ? (
            <Table
              caption={`Membership changes of ${id}`}
              rows={trail.items}
              columns={[
                { label: "When", cell: (e) => when(e.recordedAt) },
                { label: "Action", cell: (e) => <Badge value={e.action} /> },
                { label: "Device", cell: (e) => e.deviceId },
                {
                  label: "Role",
                  cell: (e) => e.previousRole ? `${e.previousRole} → ${e.role}` : e.role ?? "—",
                },
                { label: "By", cell: (e) => e.actor },
              ]}
            />
          )
          : <Empty title="No membership changes recorded." />}
        <Pagination
          path={groupPath(id)}
          params={{}}
          cursor={cursor}
          nextCursor={trail.nextCursor}
        />
      </section>,
    ]);
  });

  app.get("/groups/:id/members/:device/remove", async (c) => {
    const id = c.req.param("id");
    const deviceId = c.req.param("device");
    const role = await deps.storage.groups.role(id, deviceId);
    if (role === null) {
      throw new PageError(404, "Not a member", `device “${deviceId}” is not in group “${id}”`);
    }
    return renderPage(c, deps, { title: "Remove group member", active: "groups" }, [
      <PostForm action={removePath(id, deviceId)} csrf={c.get("session")!.csrf} class="confirm">
        <input type="hidden" name="confirm" value="yes" />
        <p>
          Remove device <code>{deviceId}</code> ({role}) from group{" "}
          <code>{id}</code>? Its live route to the group ends on every node; it no longer receives
          the group's messages.
        </p>
        <div class="form-actions">
          <button type="submit" class="danger">Remove {deviceId}</button>
          <a href={groupPath(id)}>Cancel</a>
        </div>
      </PostForm>,
    ]);
  });

  app.post("/groups/:id/members/:device/remove", async (c) => {
    const id = c.req.param("id");
    const deviceId = c.req.param("device");
    const form = await c.req.parseBody();
    if (form.confirm !== "yes") return seeOther(c, removePath(id, deviceId));
    const actor = actorOf(c.get("session")!.label);
    await attempt(c, "Nothing was removed", async () => {
      await removeGroupMember(deps.storage, actor, id, deviceId);
      deps.log.info("console: group member removed", {
        operator: actor,
        group: id,
        device: deviceId,
      });
      flash(c, "ok", `Device ${deviceId} was removed from ${id}.`);
    });
    return seeOther(c, groupPath(id));
  });
}
