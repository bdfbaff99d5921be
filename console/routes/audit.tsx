// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/** The operator audit log: who did what to which target, with before and after. */
import type { Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import { renderPage } from "../render.tsx";
import { PagedTable } from "../components/pagination.tsx";
import { Field, FilterForm } from "../components/forms.tsx";
import { Empty } from "../components/empty.tsx";
import { when } from "../components/format.ts";
import { parseText } from "../validate.ts";

/** A before/after value as compact text. */
function Change(props: { value: unknown }) {
  if (props.value === null || props.value === undefined) return <span class="muted">—</span>;
  return <code class="json">{JSON.stringify(props.value)}</code>;
}

export function register(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  app.get("/audit", async (c) => {
    const actor = parseText(c.req.query("actor"));
    const action = parseText(c.req.query("action"));
    const target = parseText(c.req.query("target"));
    const cursor = c.req.query("cursor") || null;
    const params = { actor, action, target };
    const page = await deps.storage.audit.list({
      actor: actor ?? undefined,
      action: action ?? undefined,
      target: target ?? undefined,
      cursor,
      limit: 50,
    });
    const filtered = !!(actor || action || target);
    return renderPage(c, deps, { title: "Operator audit log", active: "audit" }, [
      <FilterForm action="/audit" label="Filter the audit log" clear={filtered}>
        <Field name="actor" label="Actor" value={actor} placeholder="console:…" />
        <Field name="action" label="Action" value={action} placeholder="device.revoke" />
        <Field name="target" label="Target" value={target} placeholder="device:…" />
      </FilterForm>,
      <PagedTable
        caption="Operator actions, newest first"
        page={page}
        columns={[
          { label: "When", cell: (e) => when(e.recordedAt) },
          {
            label: "Actor",
            cell: (e) => <a href={`/audit?actor=${encodeURIComponent(e.actor)}`}>{e.actor}</a>,
          },
          { label: "Action", cell: (e) => <code class="nowrap">{e.action}</code> },
          { label: "Target", cell: (e) => e.target },
          { label: "Before", cell: (e) => <Change value={e.before} /> },
          { label: "After", cell: (e) => <Change value={e.after} /> },
        ]}
        path="/audit"
        params={params}
        cursor={cursor}
        empty={
          <Empty title={filtered ? "No audit entries match." : "No operator actions yet."}>
            Every action taken in the console or the CLI is recorded here.
          </Empty>
        }
      />,
    ]);
  });
}
