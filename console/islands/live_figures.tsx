/**
 * Dashboard island: the live figures and their chart. Rendered on the server with the history
 * so far (works without JavaScript); in the browser it subscribes to /live/figures
 * (server-sent events) and redraws as samples arrive.
 */
import { useEffect, useState } from "preact/hooks";
import { Chart, spanText } from "../components/chart.tsx";
import type { FigureSample, NodeFigures } from "../figures.ts";

/** Seconds as "3 d 4 h", "2 h 5 min", "4 min 10 s" or "12 s". */
export function uptimeText(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

function NodesTable(props: { nodes: NodeFigures[] | null; at: number }) {
  if (props.nodes === null) return <p class="muted">Node heartbeats cannot be read.</p>;
  if (props.nodes.length === 0) {
    return <p class="muted">No node has published a heartbeat yet.</p>;
  }
  return (
    <table class="nodes">
      <caption>Nodes (from their heartbeats, every 5 s)</caption>
      <thead>
        <tr>
          <th scope="col">Node</th>
          <th scope="col">Address</th>
          <th scope="col">Version</th>
          <th scope="col">Uptime</th>
          <th scope="col" class="num">Connections</th>
          <th scope="col" class="num">Frames/s</th>
        </tr>
      </thead>
      <tbody>
        {props.nodes.map((n) => (
          <tr key={n.nodeId} data-node={n.nodeId}>
            <td>
              <strong>{n.nodeId}</strong>
            </td>
            <td>
              <code>{n.address}</code>
            </td>
            <td>{n.version}</td>
            <td>{uptimeText((props.at - Date.parse(n.startedAt)) / 1000)}</td>
            <td class="num">{n.connections.toLocaleString("en-US")}</td>
            <td class="num">{n.framesPerSecond.toLocaleString("en-US")}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export interface LiveFiguresProps {
  history: FigureSample[];
  spanMs: number;
  /** Whether the relay server supplies connection and frame figures (false when alone). */
  serverFigures: boolean;
}

type Key = Exclude<keyof FigureSample, "at" | "error" | "nodes">;

const CARDS: { key: Key; label: string; unit?: string }[] = [
  { key: "connections", label: "Connections" },
  { key: "framesPerSecond", label: "Frames per second" },
  { key: "relayDepth", label: "Relay queue depth" },
  { key: "handshakeFailures", label: "Handshake failures", unit: "since start" },
  { key: "pendingApprovals", label: "Pending approvals" },
  { key: "outboxBacklog", label: "Federation outbox backlog" },
];

const show = (n: number | null | undefined) =>
  n === null || n === undefined ? "—" : n.toLocaleString("en-US");

export function LiveFigures(props: LiveFiguresProps) {
  const [history, setHistory] = useState(props.history);
  const [state, setState] = useState<"static" | "live" | "lost">("static");

  useEffect(() => {
    const source = new EventSource("/live/figures");
    source.addEventListener("sample", (e) => {
      const sample = JSON.parse((e as MessageEvent).data) as FigureSample;
      setState("live");
      setHistory((h) => [...h.filter((s) => s.at < sample.at), sample].slice(-120));
    });
    source.onerror = () => setState("lost");
    return () => source.close();
  }, []);

  const latest = history.at(-1);
  const series = (key: Key) => history.map((s) => ({ at: s.at, value: s[key] }));
  return (
    <section class="live" aria-labelledby="live-title">
      <h2 id="live-title">
        Live figures{" "}
        <span class={`live-state live-${state}`} role="status">
          {state === "live"
            ? "updating"
            : state === "lost"
            ? "connection lost, retrying"
            : "as of page load"}
        </span>
      </h2>
      {latest?.error && <p class="flash error" role="alert">{latest.error}</p>}
      {!props.serverFigures && (
        <p class="note">
          The console runs on its own: connections and frames are known only to the relay server
          process.
        </p>
      )}
      <ul class="cards">
        {CARDS.map((card) => (
          <li key={card.key} class="card" data-figure={card.key}>
            <span class="card-label">{card.label}</span>
            <span class="card-value">{show(latest?.[card.key])}</span>
            {card.unit && <span class="card-unit">{card.unit}</span>}
            <Chart label={card.label} points={series(card.key)} spanMs={props.spanMs} />
          </li>
        ))}
      </ul>
      <section class="cluster" aria-labelledby="nodes-title">
        <h3 id="nodes-title">Nodes ({latest?.nodes?.length ?? "—"})</h3>
        <NodesTable nodes={latest?.nodes ?? null} at={latest?.at ?? 0} />
      </section>
      <figure class="main-chart">
        <Chart
          label="Frames per second"
          points={series("framesPerSecond")}
          spanMs={props.spanMs}
          variant="main"
        />
        <figcaption>
          Frames per second (in + out), last {spanText(props.spanMs)}
        </figcaption>
      </figure>
    </section>
  );
}
