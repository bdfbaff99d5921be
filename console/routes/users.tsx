// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/** Users: search by handle or name, and one user's devices. */
import type { Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import { renderPage } from "../render.tsx";
import { Badge } from "../components/table.tsx";
import { PagedTable } from "../components/pagination.tsx";
import { Field, FilterForm, PostForm } from "../components/forms.tsx";
import { Empty } from "../components/empty.tsx";
import { shortKey, when } from "../components/format.ts";
import { PageError } from "../middleware/errors.tsx";
import { flash, seeOther } from "../render.tsx";
import { actorOf, adminFor } from "../actions.ts";
import { StorageError } from "../../storage/errors.ts";
import { parseText } from "../validate.ts";
import { DeviceActions } from "./device_actions.tsx";

const DEVICE_COUNT_CAP = 100;

export function register(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  app.get("/users", async (c) => {
    const search = parseText(c.req.query("q"));
    const cursor = c.req.query("cursor") || null;
    const page = await deps.storage.users.list({ search: search ?? undefined, cursor, limit: 50 });
    // Devices per user: one bounded read each, for the 50 users on this page only.
    const counts = new Map(
      await Promise.all(page.items.map(async (u) => {
        const d = await deps.storage.devices.list({ userId: u.id, limit: DEVICE_COUNT_CAP });
        return [u.id, d.nextCursor ? `${DEVICE_COUNT_CAP}+` : String(d.items.length)] as const;
      })),
    );
    return renderPage(c, deps, { title: "Users", active: "users" }, [
      <FilterForm action="/users" label="Search users" clear={!!search}>
        <Field name="q" label="Handle or name contains" value={search} type="search" />
      </FilterForm>,
      <PagedTable
        caption="Users"
        page={page}
        columns={[
          {
            label: "Handle",
            cell: (u) => <a href={`/users/${encodeURIComponent(u.id)}`}>{u.handle}</a>,
          },
          { label: "Display name", cell: (u) => u.displayName ?? "—" },
          { label: "Id", cell: (u) => <code>{u.id}</code> },
          { label: "Created", cell: (u) => when(u.createdAt) },
          {
            label: "Devices",
            numeric: true,
            cell: (u) => (
              <a
                href={`/devices?user=${encodeURIComponent(u.id)}`}
                aria-label={`Devices of ${u.handle}`}
              >
                {counts.get(u.id)}
              </a>
            ),
          },
        ]}
        path="/users"
        params={{ q: search }}
        cursor={cursor}
        empty={
          <Empty title={search ? "No user matches." : "No users yet."}>
            {search
              ? "Try part of the handle or display name."
              : "Users appear with their first device."}
          </Empty>
        }
      />,
    ]);
  });

  app.get("/users/:id", async (c) => {
    const id = c.req.param("id");
    const cursor = c.req.query("cursor") || null;
    const user = await deps.storage.users.get(id);
    if (!user) throw new PageError(404, "User not found", `no user has the id “${id}”`);
    const [devices, own, counted, paired] = await Promise.all([
      deps.storage.devices.list({ userId: id, cursor, limit: 50 }),
      deps.storage.pairing.deviceLimit(id),
      deps.storage.pairing.countDevices(id),
      deps.storage.pairing.devicesOf(id),
    ]);
    const pairedBy = new Map(paired.map((d) => [d.id, d.pairedBy]));
    const defaultLimit = deps.config.limits.maxDevicesPerUser;
    const path = `/users/${encodeURIComponent(id)}`;
    const session = c.get("session")!;
    return renderPage(c, deps, { title: `User ${user.handle}`, active: "users" }, [
      <dl class="facts">
        <dt>Handle</dt>
        <dd>{user.handle}</dd>
        <dt>Display name</dt>
        <dd>{user.displayName ?? "—"}</dd>
        <dt>Avatar URL</dt>
        <dd>{user.avatarUrl ?? "—"}</dd>
        <dt>Id</dt>
        <dd>
          <code>{user.id}</code>
        </dd>
        <dt>Created</dt>
        <dd>{when(user.createdAt)}</dd>
        <dt>Updated</dt>
        <dd>{when(user.updatedAt)}</dd>
        <dt>Devices</dt>
        <dd data-device-limit={own ?? "default"}>
          {counted} of {own ?? defaultLimit} (pending and active count;{" "}
          {own === null
            ? "the server's limit, [limits] max_devices_per_user"
            : `this user's own limit; the server's is ${defaultLimit}`})
        </dd>
      </dl>,
      <PostForm action={`${path}/device-limit`} csrf={session.csrf} class="inline">
        <Field
          name="limit"
          label="Device limit of this user"
          value={own === null ? "" : String(own)}
          placeholder={`${defaultLimit} (default)`}
          hint="1 to 10 000; empty restores the server's limit. Devices held already stay."
        />
        <div class="form-actions">
          <button type="submit">Set limit</button>
        </div>
      </PostForm>,
      <h2>Devices</h2>,
      <PagedTable
        caption={`Devices of ${user.handle}`}
        page={devices}
        columns={[
          {
            label: "Device",
            cell: (d) => <a href={`/devices/${encodeURIComponent(d.id)}`}>{d.id}</a>,
          },
          { label: "Status", cell: (d) => <Badge value={d.status} /> },
          { label: "Key", cell: (d) => <code>{shortKey(d.publicKey)}</code> },
          {
            label: "Paired by",
            cell: (d) => {
              const by = pairedBy.get(d.id);
              return by
                ? (
                  <span data-paired-by={by}>
                    <a href={`/devices/${encodeURIComponent(by)}`}>{by}</a>, {when(d.createdAt)}
                  </span>
                )
                : "—";
            },
          },
          { label: "Last seen", cell: (d) => when(d.lastSeenAt) },
          { label: "Actions", cell: (d) => <DeviceActions device={d} back={path} /> },
        ]}
        path={path}
        params={{}}
        cursor={cursor}
        empty={<Empty title="This user has no devices." />}
      />,
    ]);
  });

  app.post("/users/:id/device-limit", async (c) => {
    const id = c.req.param("id");
    const form = await c.req.parseBody();
    const text = typeof form.limit === "string" ? form.limit.trim() : "";
    const path = `/users/${encodeURIComponent(id)}`;
    if (text !== "" && !/^\d{1,5}$/.test(text)) {
      flash(c, "error", `The device limit was not changed: “${text}” is not a number 1..10000.`);
      return seeOther(c, path);
    }
    const actor = actorOf(c.get("session")!.label);
    try {
      const view = await adminFor(deps.storage, actor).setDeviceLimit(
        id,
        text === "" ? null : Number(text),
      );
      deps.log.info("console: device limit", { operator: actor, user: id });
      flash(
        c,
        "ok",
        `The device limit of ${view.handle} is now ${
          view.maxDevices ?? `the server's (${deps.config.limits.maxDevicesPerUser})`
        }.`,
      );
    } catch (err) {
      if (err instanceof StorageError && err.status < 500) {
        flash(c, "error", `The device limit was not changed: ${err.message}.`);
      } else throw err;
    }
    return seeOther(c, path);
  });
}
