// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/**
 * The key-event archive: the archived ranges (chunks the retention job moved out of the
 * database, from the database index) and, on request, one device's archived history read back
 * from the archive target (each chunk checked against its recorded hash).
 */
import type { Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import { renderPage } from "../render.tsx";
import { Badge, Table } from "../components/table.tsx";
import { Field, FilterForm } from "../components/forms.tsx";
import { Empty } from "../components/empty.tsx";
import { ErrorBox } from "../components/flash.tsx";
import { when } from "../components/format.ts";
import { parseText } from "../validate.ts";
import { archiveTarget } from "../../server/retention.ts";
import { archivedHistory } from "../../storage/archive/key_events.ts";
import type { ArchivedKeyEvent } from "../../storage/types.ts";

const ID_RE = /^[A-Za-z0-9._:@-]{1,128}$/;

export function register(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  app.get("/key-events/archive", async (c) => {
    const device = parseText(c.req.query("device"), 128);
    const retention = deps.config.retention;
    const target = archiveTarget(deps.config);
    let history: { events: ArchivedKeyEvent[]; truncated: boolean } | null = null;
    let problem: string | null = null;
    const invalid = device !== null && !ID_RE.test(device);
    if (invalid) {
      problem = "A device id is 1 to 128 characters of A-Z a-z 0-9 . _ : @ -";
    } else if (device !== null) {
      try {
        history = await archivedHistory(deps.storage.keyEventArchive, target, device);
      } catch (err) {
        problem = (err as Error).message;
      }
    }
    const chunks = await deps.storage.keyEventArchive.chunks({ limit: 200 });
    return renderPage(c, deps, {
      title: "Key-event archive",
      active: "key-events",
      status: invalid ? 400 : 200,
    }, [
      <p>
        {retention.keyEventsDays === 0
          ? "Retention is off ([retention] key_events_days = 0): key events stay in the database."
          : `Key events older than ${retention.keyEventsDays} days are archived to ${target.id} ` +
            `and deleted from the database (a pass every ${retention.interval} s).`}{" "}
        <a href="/key-events">Key events in the database</a>
      </p>,
      <FilterForm action="/key-events/archive" label="A device's archived history" clear={!!device}>
        <Field name="device" label="Device id" value={device} />
      </FilterForm>,
      problem && <ErrorBox title="Archived history not available:" detail={problem} />,
      history && (history.events.length > 0
        ? (
          <section aria-labelledby="history-title">
            <h2 id="history-title">Archived key events of {device}</h2>
            <Table
              caption={`Archived key events of ${device}`}
              rows={history.events}
              columns={[
                { label: "When (UTC)", cell: (e) => e.recorded_at },
                { label: "Kind", cell: (e) => <Badge value={e.kind} /> },
                { label: "Event", cell: (e) => <code>{e.event_id}</code> },
                {
                  label: "Key",
                  cell: (e) => <code title={e.public_key}>{e.public_key.slice(0, 16)}…</code>,
                },
                { label: "Actor", cell: (e) => e.actor },
              ]}
            />
            {history.truncated && <p>Showing the first 1000 archived events.</p>}
          </section>
        )
        : <Empty title={`No archived key events for ${device}.`} />),
      <section aria-labelledby="ranges-title">
        <h2 id="ranges-title">Archived ranges</h2>
        {chunks.length > 0
          ? (
            <Table
              caption="Archived chunks, newest first"
              rows={chunks}
              columns={[
                { label: "Chunk", cell: (ch) => ch.seq },
                { label: "First event (UTC)", cell: (ch) => ch.firstAt },
                { label: "Last event (UTC)", cell: (ch) => ch.lastAt },
                { label: "Events", cell: (ch) => ch.events },
                {
                  label: "SHA-256",
                  cell: (ch) => <code title={ch.sha256}>{ch.sha256.slice(0, 16)}…</code>,
                },
                { label: "Archived", cell: (ch) => when(ch.archivedAt) },
                { label: "Target", cell: (ch) => <code>{ch.target}</code> },
              ]}
            />
          )
          : (
            <Empty title="Nothing archived yet.">
              The retention job archives key events older than [retention] key_events_days.
            </Empty>
          )}
      </section>,
    ]);
  });
}
