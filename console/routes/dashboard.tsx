// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/** The dashboard: live figures (island, hydrated from /static/live_figures.js) and shortcuts. */
import type { Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import { renderPage } from "../render.tsx";
import { Island } from "../components/island.tsx";
import { LiveFigures, type LiveFiguresProps } from "../islands/live_figures.tsx";
import { HISTORY_LENGTH } from "../figures.ts";
import { figure } from "../components/format.ts";

export function register(app: Hono<AppEnv>, deps: ConsoleDeps, hasServerFigures: boolean): void {
  app.get("/", async (c) => {
    await deps.sampler.current();
    const props: LiveFiguresProps = {
      history: deps.sampler.history,
      spanMs: HISTORY_LENGTH * deps.sampler.intervalMs,
      serverFigures: hasServerFigures,
    };
    const pending = props.history.at(-1)?.pendingApprovals ?? null;
    return renderPage(c, deps, {
      title: "Dashboard",
      active: "dashboard",
      scripts: ["live_figures.js"],
    }, [
      <Island name="live_figures" data={props}>
        <LiveFigures {...props} />
      </Island>,
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
