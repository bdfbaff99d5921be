// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/**
 * Devices: the queue of what waits for an operator first (new devices and new keys of active
 * devices), then every device with filters.
 */
import type { Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import type { DeviceStatus, DeviceWithUser, Page, User } from "../../storage/types.ts";
import { renderPage } from "../render.tsx";
import { Badge, type Column, Table } from "../components/table.tsx";
import { PagedTable } from "../components/pagination.tsx";
import { Field, FilterForm, Select } from "../components/forms.tsx";
import { Empty } from "../components/empty.tsx";
import { ErrorBox } from "../components/flash.tsx";
import { shortKey, when } from "../components/format.ts";
import { DEVICE_STATUSES, parseFlag, parseStatus, parseText } from "../validate.ts";
import { DeviceActions } from "./device_actions.tsx";

const deviceLink = (id: string) => `/devices/${encodeURIComponent(id)}`;

/** Columns shared by the approval queue and the full list. */
function columns(back: string): Column<DeviceWithUser>[] {
  return [
    { label: "Device", cell: (d) => <a href={deviceLink(d.id)}>{d.id}</a> },
    {
      label: "User",
      cell: (d) => <a href={`/users/${encodeURIComponent(d.userId)}`}>{d.userHandle}</a>,
    },
    { label: "Status", cell: (d) => <Badge value={d.status} /> },
    {
      label: "Key",
      cell: (d) => (
        <>
          <code>{shortKey(d.publicKey)}</code>
          {d.pendingPublicKey && (
            <span class="sub">
              new key waiting: <code>{shortKey(d.pendingPublicKey)}</code>
            </span>
          )}
        </>
      ),
    },
    { label: "Registered", cell: (d) => when(d.createdAt) },
    { label: "Last seen", cell: (d) => when(d.lastSeenAt) },
    { label: "Actions", cell: (d) => <DeviceActions device={d} back={back} /> },
  ];
}

/** One user's rows of a page, with the user's device counts and limit. */
interface UserGroup {
  userId: string;
  handle: string;
  rows: DeviceWithUser[];
  counts: Record<DeviceStatus, number>;
  limit: number;
  ownLimit: boolean;
}

/** The page's rows grouped by user (in the order users first appear), with their counts. */
async function groupByUser(
  deps: ConsoleDeps,
  rows: DeviceWithUser[],
): Promise<UserGroup[]> {
  const groups = new Map<string, UserGroup>();
  for (const d of rows) {
    let g = groups.get(d.userId);
    if (!g) {
      g = {
        userId: d.userId,
        handle: d.userHandle,
        rows: [],
        counts: { pending: 0, active: 0, revoked: 0 },
        limit: deps.config.limits.maxDevicesPerUser,
        ownLimit: false,
      };
      groups.set(d.userId, g);
    }
    g.rows.push(d);
  }
  await Promise.all([...groups.values()].map(async (g) => {
    const [all, own] = await Promise.all([
      deps.storage.pairing.devicesOf(g.userId),
      deps.storage.pairing.deviceLimit(g.userId),
    ]);
    for (const d of all) g.counts[d.status] = (g.counts[d.status] ?? 0) + 1;
    if (own !== null) {
      g.limit = own;
      g.ownLimit = true;
    }
  }));
  return [...groups.values()];
}

export function register(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  app.get("/devices", async (c) => {
    const status = parseStatus<DeviceStatus>(c.req.query("status"), DEVICE_STATUSES, "Status");
    const awaiting = parseFlag(c.req.query("awaiting"), "Waiting for approval");
    const userText = parseText(c.req.query("user"));
    const search = parseText(c.req.query("q"));
    const cursor = c.req.query("cursor") || null;
    const params = {
      status: status.value,
      awaiting: awaiting.value ? "1" : null,
      user: userText,
      q: search,
    };
    const filterError = status.error ?? awaiting.error;
    const back = new URL(c.req.url).pathname + new URL(c.req.url).search;

    let user: User | null = null;
    let userMissing = false;
    if (userText) {
      user = await deps.storage.users.getByHandle(userText) ??
        await deps.storage.users.get(userText);
      userMissing = user === null;
    }
    const showQueue = !status.value && !awaiting.value && !userText && !search && !cursor;
    const [queue, list]: [Page<DeviceWithUser> | null, Page<DeviceWithUser> | null] = await Promise
      .all([
        // The queue holds everything an operator must decide: a device never approved, and an
        // active device asking for a new key (rotation without auto-approve).
        showQueue ? deps.storage.devices.list({ awaitingApproval: true, limit: 20 }) : null,
        filterError || userMissing ? null : deps.storage.devices.list({
          status: status.value ?? undefined,
          awaitingApproval: awaiting.value || undefined,
          userId: user?.id,
          search: search ?? undefined,
          cursor,
          limit: 50,
        }),
      ]);
    const byUser = list ? await groupByUser(deps, list.items) : [];

    return renderPage(c, deps, {
      title: "Devices",
      active: "devices",
      status: filterError ? 400 : 200,
    }, [
      showQueue && (
        <section aria-labelledby="queue-title" class="queue">
          <h2 id="queue-title">Waiting for approval</h2>
          {queue && queue.items.length > 0
            ? (
              <>
                <p class="muted">
                  New devices, and active devices asking for a new key (“new key waiting”).
                </p>
                <Table
                  caption="Devices and new keys waiting for approval"
                  columns={columns(back)}
                  rows={queue.items}
                />
                {queue.nextCursor && (
                  <p>
                    <a href="/devices?awaiting=1">See everything waiting for approval</a>
                  </p>
                )}
              </>
            )
            : <Empty title="Nothing is waiting for approval." />}
        </section>
      ),
      <section aria-labelledby="all-title">
        <h2 id="all-title">{showQueue ? "All devices" : "Devices"}</h2>
        <FilterForm action="/devices" label="Filter devices" clear={!showQueue}>
          <Select
            name="status"
            label="Status"
            value={status.value}
            options={[
              ["", "Any status"],
              ...DEVICE_STATUSES.map((s) => [s, s] as [string, string]),
            ]}
          />
          <Select
            name="awaiting"
            label="Waiting for approval"
            value={awaiting.value ? "1" : ""}
            options={[["", "Either"], ["1", "Only devices or keys waiting"]]}
          />
          <Field name="user" label="User (handle or id)" value={userText} />
          <Field name="q" label="Device id contains" value={search} type="search" />
        </FilterForm>
        {filterError && <ErrorBox title="Filter not applied:" detail={filterError} />}
        {userMissing && (
          <ErrorBox title="No such user:" detail={`no user has the handle or id “${userText}”.`} />
        )}
        {list && (
          <PagedTable
            caption="Devices"
            columns={columns(back)}
            page={list}
            path="/devices"
            params={params}
            cursor={cursor}
            groups={byUser.map((g) => ({
              key: g.userId,
              caption: `Devices of ${g.handle} on this page`,
              heading: (
                <h3 data-user={g.userId}>
                  <a href={`/users/${encodeURIComponent(g.userId)}`}>{g.handle}</a>{" "}
                  <span class="muted" data-device-counts>
                    {g.counts.active + g.counts.pending} of {g.limit} devices
                    {g.ownLimit ? " (own limit)" : ""} · {g.counts.active} active ·{" "}
                    {g.counts.pending} pending · {g.counts.revoked} revoked
                  </span>
                </h3>
              ),
              rows: g.rows,
            }))}
            empty={
              <Empty title="No devices match.">
                {showQueue
                  ? "Devices appear here after their first handshake."
                  : "Try a different filter, or clear it."}
              </Empty>
            }
          />
        )}
      </section>,
    ]);
  });
}
