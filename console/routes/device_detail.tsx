// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/** One device: state, presence, relay queue, key-event timeline, sessions and groups. */
import type { Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import { renderPage } from "../render.tsx";
import { Badge, Table } from "../components/table.tsx";
import { Pagination } from "../components/pagination.tsx";
import { Empty } from "../components/empty.tsx";
import { age, figure, hex, href, when } from "../components/format.ts";
import { PageError } from "../middleware/errors.tsx";
import { DeviceActions } from "./device_actions.tsx";

export function register(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  app.get("/devices/:id", async (c) => {
    const id = c.req.param("id");
    const eventsCursor = c.req.query("events") || null;
    const sessionsCursor = c.req.query("sessions") || null;
    const s = deps.storage;
    const device = await s.devices.get(id);
    if (!device) throw new PageError(404, "Device not found", `no device has the id “${id}”`);
    const [user, events, sessions, queue, groups, presence, route, pairedBy, codes] = await Promise
      .all([
        s.users.get(device.userId),
        s.keyEvents.list({ deviceId: id, cursor: eventsCursor, limit: 20 }),
        s.sessions.byDevice(id, { cursor: sessionsCursor, limit: 10 }),
        s.relay.depth(id),
        s.groups.groupsOf(id),
        s.ephemeral.getPresence(id).catch(() => null),
        s.ephemeral.getRoute(id).catch(() => null),
        s.pairing.pairedBy(id),
        s.pairing.list({ issuedBy: id, limit: 20 }),
      ]);
    const path = `/devices/${encodeURIComponent(id)}`;
    const now = deps.now();
    return renderPage(c, deps, { title: `Device ${id}`, active: "devices" }, [
      <section aria-labelledby="state-title">
        <h2 id="state-title">State</h2>
        <dl class="facts">
          <dt>User</dt>
          <dd>
            <a href={`/users/${encodeURIComponent(device.userId)}`}>
              {user?.handle ?? device.userId}
            </a>
          </dd>
          <dt>Status</dt>
          <dd>
            <Badge value={device.status} />
          </dd>
          <dt>Public key</dt>
          <dd>
            <code class="key">{hex(device.publicKey)}</code>
          </dd>
          {device.pendingPublicKey && (
            <>
              <dt>New key waiting for approval</dt>
              <dd>
                <code class="key">{hex(device.pendingPublicKey)}</code>
              </dd>
            </>
          )}
          <dt>Connection</dt>
          <dd>
            {route
              ? `online on node ${route.nodeId}`
              : presence?.state === "online"
              ? "online"
              : "not connected"}
          </dd>
          <dt>Delivery</dt>
          <dd class="delivery">
            <span data-delivery="depth">{figure(queue.depth)} waiting</span>
            {queue.oldest && (
              <span data-delivery="oldest">, oldest {age(now - queue.oldest.getTime())} old</span>
            )}
            {queue.inFlight !== undefined && (
              <span data-delivery="in-flight">
                ; {figure(queue.inFlight)} in flight (sent, not yet acknowledged)
              </span>
            )}
            {queue.redelivered !== undefined && (
              <span data-delivery="redelivered">
                ; {figure(queue.redelivered)} redelivered
              </span>
            )}
          </dd>
          <dt>Registered</dt>
          <dd>{when(device.createdAt)}</dd>
          {pairedBy && (
            <>
              <dt>Paired by</dt>
              <dd data-paired-by={pairedBy}>
                <a href={`/devices/${encodeURIComponent(pairedBy)}`}>{pairedBy}</a>{" "}
                (with a pairing code it asked for), {when(device.createdAt)}
              </dd>
            </>
          )}
          <dt>Last seen</dt>
          <dd>{when(device.lastSeenAt)}</dd>
        </dl>
        <p>
          <DeviceActions device={device} back={path} />
        </p>
      </section>,
      <section aria-labelledby="events-title">
        <h2 id="events-title">Key events</h2>
        {events.items.length
          ? (
            <ol class="timeline">
              {events.items.map((e) => (
                <li>
                  <time datetime={e.recordedAt.toISOString()}>{when(e.recordedAt)}</time>
                  <Badge value={e.kind} />
                  <code title={hex(e.publicKey)}>{hex(e.publicKey).slice(0, 16)}…</code>
                  <span class="muted">by {e.actor}</span>
                </li>
              ))}
            </ol>
          )
          : <Empty title="No key events recorded for this device." />}
        <Pagination
          path={path}
          params={{ sessions: sessionsCursor }}
          cursor={eventsCursor}
          nextCursor={events.nextCursor}
          cursorParam="events"
        />
        <p>
          <a href={href("/key-events", { device: id })}>All key events of this device</a>
          {" · "}
          <a href={href("/key-events/archive", { device: id })}>Its archived history</a>
        </p>
      </section>,
      <section aria-labelledby="pairing-title">
        <h2 id="pairing-title">Pairing codes it asked for</h2>
        {codes.length
          ? (
            <Table
              caption="Pairing codes this device asked for, newest first (the codes are never stored)"
              rows={codes}
              columns={[
                { label: "Asked", cell: (r) => when(r.createdAt) },
                { label: "State", cell: (r) => <Badge value={r.state} /> },
                { label: "Wrong attempts", cell: (r) => figure(r.attempts) },
                {
                  label: "Paired device",
                  cell: (r) =>
                    r.usedBy
                      ? <a href={`/devices/${encodeURIComponent(r.usedBy)}`}>{r.usedBy}</a>
                      : "—",
                },
                { label: "Used", cell: (r) => when(r.usedAt) },
              ]}
            />
          )
          : <Empty title="This device has not asked for a pairing code." />}
      </section>,
      <section aria-labelledby="sessions-title">
        <h2 id="sessions-title">Sessions</h2>
        {sessions.items.length
          ? (
            <Table
              caption="Recent sessions of this device"
              rows={sessions.items}
              columns={[
                { label: "Started", cell: (r) => when(r.createdAt) },
                { label: "Pattern", cell: (r) => r.pattern },
                { label: "Protocol", cell: (r) => `v${r.protocolVersion}` },
                { label: "Address", cell: (r) => r.remoteAddr ?? "—" },
                { label: "Node", cell: (r) => r.nodeId },
                { label: "Session", cell: (r) => <code>{r.sessionId}</code> },
              ]}
            />
          )
          : <Empty title="This device has not completed a handshake yet." />}
        <Pagination
          path={path}
          params={{ events: eventsCursor }}
          cursor={sessionsCursor}
          nextCursor={sessions.nextCursor}
          cursorParam="sessions"
        />
      </section>,
      <section aria-labelledby="groups-title">
        <h2 id="groups-title">Groups</h2>
        {groups.length
          ? (
            <ul>
              {groups.map((g) => (
                <li>
                  <a href={`/groups/${encodeURIComponent(g.groupId)}`}>{g.groupId}</a>{" "}
                  <Badge value={g.role} />
                  {g.deviceId === id ? null : ` through its user ${user?.handle ?? device.userId}`}
                </li>
              ))}
            </ul>
          )
          : <Empty title="Not a member of any group." />}
      </section>,
    ]);
  });
}
