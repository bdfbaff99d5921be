/**
 * A small SVG time-series chart, rendered on the server and re-rendered by the dashboard island.
 * Styling comes from classes in console.css (the CSP forbids inline styles).
 */

export interface ChartPoint {
  at: number;
  value: number | null;
}

export interface ChartProps {
  label: string;
  points: ChartPoint[];
  /** Time span shown, in milliseconds, ending at the newest point. */
  spanMs: number;
  width?: number;
  height?: number;
  /** "spark" for the tiny card charts, "main" for the large one with axis labels. */
  variant?: "spark" | "main";
}

/** A chart span in words: "30 seconds", "10 minutes". */
export function spanText(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} seconds`;
  return `${Math.round(s / 60)} minutes`;
}

/** Upper bound of the y-axis: a round number at or above the largest value. */
export function niceMax(max: number): number {
  if (max <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= max) return step * magnitude;
  }
  return 10 * magnitude;
}

/** Polylines for the known stretches of a series (gaps where the value is unknown). */
export function chartPaths(
  points: ChartPoint[],
  spanMs: number,
  width: number,
  height: number,
  top: number,
): string[] {
  const end = points.at(-1)?.at ?? 0;
  const start = end - spanMs;
  const known = points.filter((p) => p.value !== null && p.at >= start);
  const yMax = niceMax(Math.max(0, ...known.map((p) => p.value!)));
  const paths: string[] = [];
  let current: string[] = [];
  for (const p of points) {
    if (p.at < start) continue;
    if (p.value === null) {
      if (current.length) paths.push(current.join(" "));
      current = [];
      continue;
    }
    const x = ((p.at - start) / spanMs) * width;
    const y = top + height - (p.value / yMax) * height;
    current.push(`${x.toFixed(1)},${y.toFixed(1)}`);
  }
  if (current.length) paths.push(current.join(" "));
  return paths;
}

export function Chart(props: ChartProps) {
  const variant = props.variant ?? "spark";
  const width = props.width ?? (variant === "main" ? 1100 : 160);
  const height = props.height ?? (variant === "main" ? 160 : 36);
  const top = variant === "main" ? 14 : 2;
  const plotHeight = height - top - (variant === "main" ? 18 : 2);
  const known = props.points.filter((p) => p.value !== null);
  const yMax = niceMax(Math.max(0, ...known.map((p) => p.value!)));
  const latest = known.at(-1)?.value;
  const paths = chartPaths(props.points, props.spanMs, width, plotHeight, top);
  const span = spanText(props.spanMs);
  const summary = latest === undefined
    ? `${props.label}: no data yet`
    : `${props.label}: latest ${latest}, highest ${
      Math.max(...known.map((p) => p.value!))
    } over the last ${span}`;
  return (
    <svg
      class={`chart chart-${variant}`}
      viewBox={`0 0 ${width} ${height}`}
      width={width}
      height={height}
      role="img"
      aria-label={summary}
    >
      <title>{summary}</title>
      <line class="axis" x1="0" y1={top + plotHeight} x2={width} y2={top + plotHeight} />
      {variant === "main" && (
        <>
          <line class="grid" x1="0" y1={top} x2={width} y2={top} />
          <line
            class="grid"
            x1="0"
            y1={top + plotHeight / 2}
            x2={width}
            y2={top + plotHeight / 2}
          />
          <text class="tick" x="2" y={top - 3}>{String(yMax)}</text>
          <text class="tick" x="2" y={top + plotHeight / 2 - 3}>{String(yMax / 2)}</text>
          <text class="tick" x="0" y={height - 4}>{`−${span}`}</text>
          <text class="tick" x={width} y={height - 4} text-anchor="end">now</text>
        </>
      )}
      {paths.map((points, i) => <polyline key={i} class="series" points={points} />)}
    </svg>
  );
}
