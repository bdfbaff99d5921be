// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/** Key events: filter by device and time, browse, export CSV and JSON. */
import type { Context, Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import { renderPage } from "../render.tsx";
import { Badge } from "../components/table.tsx";
import { PagedTable } from "../components/pagination.tsx";
import { Field, FilterForm } from "../components/forms.tsx";
import { Empty } from "../components/empty.tsx";
import { ErrorBox } from "../components/flash.tsx";
import { hex, href, when } from "../components/format.ts";
import { parseText, parseTime, timeInputValue } from "../validate.ts";
import { exportFileName, toCsv, toJson } from "../export.ts";
import { PageError } from "../middleware/errors.tsx";

function filters(c: Context<AppEnv>) {
  const device = parseText(c.req.query("device"), 512);
  const from = parseTime(c.req.query("from"), "From");
  const to = parseTime(c.req.query("to"), "To");
  const errors = [from.error, to.error].filter((e): e is string => e !== null);
  if (from.value && to.value && from.value > to.value) errors.push("From must be before To");
  return { device, from: from.value, to: to.value, errors };
}

export function register(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  app.get("/key-events", async (c) => {
    const f = filters(c);
    const cursor = c.req.query("cursor") || null;
    const params = {
      device: f.device,
      from: c.req.query("from")?.trim() || null,
      to: c.req.query("to")?.trim() || null,
    };
    const page = f.errors.length ? null : await deps.storage.keyEvents.list({
      deviceId: f.device ?? undefined,
      from: f.from ?? undefined,
      to: f.to ?? undefined,
      cursor,
      limit: 50,
    });
    return renderPage(c, deps, {
      title: "Key events",
      active: "key-events",
      status: f.errors.length ? 400 : 200,
    }, [
      <FilterForm
        action="/key-events"
        label="Filter key events"
        clear={!!(f.device || params.from || params.to)}
      >
        <Field name="device" label="Device id" value={f.device} />
        <Field
          name="from"
          label="From (UTC)"
          type="datetime-local"
          value={f.from ? timeInputValue(f.from) : params.from}
        />
        <Field
          name="to"
          label="To (UTC)"
          type="datetime-local"
          value={f.to ? timeInputValue(f.to) : params.to}
        />
      </FilterForm>,
      f.errors.length > 0 && <ErrorBox title="Filter not applied:" detail={f.errors.join("; ")} />,
      !f.errors.length && (
        <p class="exports">
          Export {f.device || f.from || f.to ? "these events" : "every event"}:{" "}
          <a class="button small" href={href("/key-events/export.csv", params)} download>CSV</a>
          {" "}
          <a class="button small" href={href("/key-events/export.json", params)} download>JSON</a>
          {" · "}
          <a href={href("/key-events/archive", { device: f.device })}>Archived key events</a>
        </p>
      ),
      page && (
        <PagedTable
          caption="Device key events"
          page={page}
          columns={[
            { label: "When", cell: (e) => when(e.recordedAt) },
            {
              label: "Device",
              cell: (e) => <a href={`/devices/${encodeURIComponent(e.deviceId)}`}>{e.deviceId}</a>,
            },
            { label: "Kind", cell: (e) => <Badge value={e.kind} /> },
            {
              label: "Key",
              cell: (e) => <code title={hex(e.publicKey)}>{hex(e.publicKey).slice(0, 16)}…</code>,
            },
            { label: "Actor", cell: (e) => e.actor },
          ]}
          path="/key-events"
          params={params}
          cursor={cursor}
          empty={
            <Empty title="No key events match.">
              Key events are written when devices register, are approved, rotate or are revoked.
            </Empty>
          }
        />
      ),
    ]);
  });

  const exportRoute = (format: "csv" | "json") => async (c: Context<AppEnv>) => {
    const f = filters(c);
    if (f.errors.length) throw new PageError(400, "Export not possible", f.errors.join("; "));
    const events = await deps.storage.keyEvents.export(
      f.device,
      f.from ?? undefined,
      f.to ?? undefined,
    );
    const name = exportFileName(f.device, new Date(deps.now()), format);
    return c.body(format === "csv" ? toCsv(events) : toJson(events), 200, {
      "content-type": format === "csv"
        ? "text/csv; charset=utf-8"
        : "application/json; charset=utf-8",
      "content-disposition": `attachment; filename="${name}"`,
    });
  };
  app.get("/key-events/export.csv", exportRoute("csv"));
  app.get("/key-events/export.json", exportRoute("json"));
}
