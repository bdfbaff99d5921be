// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/** The dashboard: live figures (island, hydrated from /static/live_figures.js) and shortcuts. */
import type { Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import { renderPage } from "../render.tsx";
import { Island } from "../components/island.tsx";
import { LiveFigures, type LiveFiguresProps } from "../islands/live_figures.tsx";
import { HISTORY_LENGTH } from "../figures.ts";
import { figure, when } from "../components/format.ts";
import { Table } from "../components/table.tsx";
import {
  LIMITED_STREAM,
  LIMITED_STREAM_LENGTH,
  type LimitedNote,
} from "../../storage/ephemeral/mod.ts";

/** How many recent sessions the online list looks at. */
export const RECENT_SESSIONS = 200;

interface OnlineDevice {
  deviceId: string;
  nodeId: string;
  since: Date;
  pattern: string;
  protocolVersion: number;
  remoteAddr: string | null;
}

/** Devices whose route still names one of the latest sessions (the route is the live truth). */
async function onlineDevices(deps: ConsoleDeps): Promise<OnlineDevice[]> {
  const recent = await deps.storage.sessions.listRecent({ limit: RECENT_SESSIONS });
  const seen = new Set<string>();
  const candidates = recent.items.filter((s) => !seen.has(s.deviceId) && seen.add(s.deviceId));
  const routes = await Promise.all(
    candidates.map((s) => deps.storage.ephemeral.getRoute(s.deviceId).catch(() => null)),
  );
  return candidates.flatMap((s, i) => {
    const route = routes[i];
    if (!route || route.sessionId !== s.sessionId) return [];
    return [{
      deviceId: s.deviceId,
      nodeId: route.nodeId,
      since: s.createdAt,
      pattern: s.pattern,
      protocolVersion: s.protocolVersion,
      remoteAddr: s.remoteAddr,
    }];
  });
}

/** How far back the "rate limited" list looks. */
export const LIMITED_WINDOW_MS = 10 * 60_000;

/** Who the nodes' rate limits refused lately (the limited stream), latest note per key. */
async function limitedRecently(deps: ConsoleDeps): Promise<LimitedNote[]> {
  const entries = await deps.storage.ephemeral.readEvents(
    LIMITED_STREAM,
    "0",
    LIMITED_STREAM_LENGTH,
  );
  const since = Date.now() - LIMITED_WINDOW_MS;
  const latest = new Map<string, LimitedNote>();
  for (const entry of entries) {
    let note: LimitedNote;
    try {
      note = JSON.parse(new TextDecoder().decode(entry.message));
    } catch {
      continue;
    }
    if (typeof note?.at !== "number" || note.at < since) continue;
    latest.set(`${note.node}|${note.kind}|${note.key}`, note);
  }
  return [...latest.values()].sort((a, b) => b.at - a.at).slice(0, 50);
}

export function register(app: Hono<AppEnv>, deps: ConsoleDeps, hasServerFigures: boolean): void {
  app.get("/", async (c) => {
    await deps.sampler.current();
    const props: LiveFiguresProps = {
      history: deps.sampler.history,
      spanMs: HISTORY_LENGTH * deps.sampler.intervalMs,
      serverFigures: hasServerFigures,
    };
    const pending = props.history.at(-1)?.pendingApprovals ?? null;
    const online = await onlineDevices(deps).catch(() => null);
    const limited = await Promise.resolve().then(() => limitedRecently(deps)).catch(() => null);
    return renderPage(c, deps, {
      title: "Dashboard",
      active: "dashboard",
      scripts: ["live_figures.js"],
    }, [
      pending !== null && pending > 0 && (
        <section class="callout approvals" aria-labelledby="approvals-title">
          <h2 id="approvals-title">
            {pending === 1
              ? "1 device or key waits for approval"
              : `${figure(pending)} devices or keys wait for approval`}
          </h2>
          <p>
            They cannot connect (or use their new key) until an operator decides.{" "}
            <a class="button primary" href="/devices?awaiting=1">Review them</a>
          </p>
        </section>
      ),
      <Island name="live_figures" data={props}>
        <LiveFigures {...props} />
      </Island>,
      <section aria-labelledby="online-title" class="online">
        <h2 id="online-title">Online devices ({online === null ? "—" : figure(online.length)})</h2>
        {online === null
          ? <p class="muted">Sessions or routes cannot be read right now.</p>
          : online.length === 0
          ? <p class="muted">No device is connected.</p>
          : (
            <Table<OnlineDevice>
              caption={`Devices with a live route, from the latest ${RECENT_SESSIONS} sessions`}
              rows={online}
              columns={[
                {
                  label: "Device",
                  cell: (o) => (
                    <a href={`/devices/${encodeURIComponent(o.deviceId)}`}>{o.deviceId}</a>
                  ),
                },
                { label: "Node", cell: (o) => o.nodeId },
                { label: "Connected", cell: (o) => when(o.since) },
                { label: "Handshake", cell: (o) => `${o.pattern} v${o.protocolVersion}` },
                { label: "Address", cell: (o) => o.remoteAddr ?? "—" },
              ]}
            />
          )}
      </section>,
      <section aria-labelledby="limited-title" class="limited">
        <h2 id="limited-title">
          Rate limited in the last 10 minutes ({limited === null ? "—" : figure(limited.length)})
        </h2>
        {limited === null
          ? <p class="muted">The ephemeral store cannot be read right now.</p>
          : limited.length === 0
          ? <p class="muted">No client was refused by a rate limit.</p>
          : (
            <Table<LimitedNote>
              caption="Addresses, devices and pairs refused by a [limits] rate, latest first"
              rows={limited}
              columns={[
                { label: "Limit", cell: (l) => l.kind },
                { label: "Who", cell: (l) => l.key },
                { label: "Refusals", cell: (l) => figure(l.count) },
                { label: "Node", cell: (l) => l.node },
                { label: "Last", cell: (l) => when(new Date(l.at)) },
              ]}
            />
          )}
      </section>,
      <section aria-labelledby="shortcuts">
        <h2 id="shortcuts">Shortcuts</h2>
        <ul class="shortcuts">
          <li>
            <a href="/devices?awaiting=1">
              Review devices and keys waiting for approval ({figure(pending)})
            </a>
          </li>
          <li>
            <a href="/peers">Federation peers and outbox</a>
          </li>
          <li>
            <a href="/audit">Operator audit log</a>
          </li>
        </ul>
      </section>,
    ]);
  });
}
