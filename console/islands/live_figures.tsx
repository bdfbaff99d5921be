/**
 * Dashboard island: the live figures and their chart. Rendered on the server with the history
 * so far (works without JavaScript); in the browser it subscribes to /live/figures
 * (server-sent events) and redraws as samples arrive.
 */
import { useEffect, useState } from "preact/hooks";
import { Chart, spanText } from "../components/chart.tsx";
import type { FigureSample } from "../figures.ts";

export interface LiveFiguresProps {
  history: FigureSample[];
  spanMs: number;
  /** Whether the relay server supplies connection and frame figures (false when alone). */
  serverFigures: boolean;
}

type Key = Exclude<keyof FigureSample, "at" | "error">;

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
