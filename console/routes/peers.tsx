// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/**
 * Federation peers: static ones from the config (read-only) and dynamic ones from the database,
 * with their outbox backlog and last delivery error; add a peer; change a peer's status.
 */
import type { Context, Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import type {
  FederationPeer,
  OutboxBacklog,
  PeerStatus,
  RemoteOffset,
  Storage,
} from "../../storage/types.ts";
import { actorOf, addPeer, adminFor, setPeerStatus } from "../actions.ts";
import type { OutboxEntry } from "../../storage/types.ts";
import { attempt, flash, renderPage, seeOther } from "../render.tsx";
import { Badge, Table } from "../components/table.tsx";
import { Field, PostForm, Select } from "../components/forms.tsx";
import { Empty } from "../components/empty.tsx";
import { ErrorBox } from "../components/flash.tsx";
import { age, figure, hex, href, shortKey, when } from "../components/format.ts";
import { PageError } from "../middleware/errors.tsx";
import { parsePeerForm, PEER_STATUSES, type PeerForm } from "../validate.ts";
import { StorageError } from "../../storage/errors.ts";

/** Remote offsets the page lists (most recently changed first). */
const RECEIPT_ROWS = 50;

const peerPath = (domain: string) => `/peers/${encodeURIComponent(domain)}/status`;
const STATUS_VERB: Record<PeerStatus, string> = {
  active: "Activate",
  pending: "Set pending",
  blocked: "Block",
};

export function register(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  const staticDomains = () => new Set(deps.config.federation.peers.map((p) => p.domain));

  const listPage = async (
    c: Context<AppEnv>,
    form: PeerForm,
    errors: Partial<Record<keyof PeerForm, string>>,
    status = 200,
  ) => {
    // Storage doubles without remote offsets show none.
    const remoteOffsets = (deps.storage as Partial<Storage>).remoteOffsets;
    const [peers, backlog, dead, offsets] = await Promise.all([
      deps.storage.peers.list(deps.config.federation.peers),
      deps.storage.outbox.backlog(),
      deps.storage.outbox.listDead({ limit: 50 }),
      remoteOffsets ? remoteOffsets.list({ limit: RECEIPT_ROWS }) : Promise.resolve([]),
    ]);
    const byDomain = new Map<string, OutboxBacklog>(backlog.map((b) => [b.peerDomain, b]));
    const now = deps.now();
    const csrf = c.get("session")!.csrf;
    const hasErrors = Object.keys(errors).length > 0;
    return renderPage(c, deps, { title: "Federation peers", active: "peers", status }, [
      peers.length
        ? (
          <Table<FederationPeer>
            caption="Federation peers"
            rows={peers}
            rowClass={(p) => `peer-${p.status}`}
            columns={[
              { label: "Domain", cell: (p) => <strong>{p.domain}</strong> },
              { label: "Endpoint", cell: (p) => <code>{p.endpoint}</code> },
              {
                label: "Key",
                cell: (p) => <code title={hex(p.publicKey)}>{shortKey(p.publicKey)}</code>,
              },
              { label: "Status", cell: (p) => <Badge value={p.status} /> },
              {
                label: "Source",
                cell: (p) => (p.source === "config" ? "config (read-only)" : "database"),
              },
              { label: "Last seen", cell: (p) => when(p.lastSeenAt) },
              {
                label: "Outbox",
                numeric: true,
                cell: (p) => {
                  const b = byDomain.get(p.domain);
                  if (!b || b.pending === 0) return "0";
                  return (
                    <>
                      {figure(b.pending)}
                      {b.oldest && <span class="sub">oldest {age(now - b.oldest.getTime())}</span>}
                    </>
                  );
                },
              },
              {
                label: "Backoff",
                cell: (p) => {
                  const b = byDomain.get(p.domain);
                  if (!b || b.pending === 0) return <span class="muted">idle</span>;
                  const next = b.nextAttemptAt ? b.nextAttemptAt.getTime() - now : null;
                  return (
                    <span class="backoff" data-peer={p.domain}>
                      {b.attempts === 0
                        ? "no failures yet"
                        : `${b.attempts} failed attempt${b.attempts === 1 ? "" : "s"}`}
                      <span class="sub">
                        {next === null
                          ? "next retry unknown"
                          : next <= 0
                          ? "retry due now"
                          : `next retry in ${age(next)}`}
                      </span>
                    </span>
                  );
                },
              },
              {
                label: "Last error",
                cell: (p) => byDomain.get(p.domain)?.lastError ?? <span class="muted">none</span>,
              },
              {
                label: "Actions",
                cell: (p) => (
                  <span class="actions">
                    {(byDomain.get(p.domain)?.pending ?? 0) > 0 && (
                      <PostForm
                        action={`/peers/${encodeURIComponent(p.domain)}/retry`}
                        csrf={csrf}
                        class="inline"
                      >
                        <button
                          type="submit"
                          class="small primary"
                          aria-label={`Retry ${p.domain} now`}
                        >
                          Retry now
                        </button>
                      </PostForm>
                    )}
                    {p.source === "config"
                      ? <span class="muted">edit the config</span>
                      : (
                        <span class="actions">
                          {PEER_STATUSES.filter((s) => s !== p.status).map((s) => (
                            <a
                              class={`button small ${s === "blocked" ? "danger" : ""}`}
                              href={href(peerPath(p.domain), { to: s })}
                              aria-label={`${STATUS_VERB[s]} ${p.domain}`}
                            >
                              {STATUS_VERB[s]}
                            </a>
                          ))}
                        </span>
                      )}
                  </span>
                ),
              },
            ]}
          />
        )
        : (
          <Empty title="No federation peers.">
            Add one below, or list trusted domains under [federation] in commucat.toml.
          </Empty>
        ),
      // Backlog for domains that are no longer peers still matters.
      backlog.filter((b) => !peers.some((p) => p.domain === b.peerDomain) && b.pending > 0)
          .length > 0 && (
        <p class="note">
          Outbox entries also wait for unknown domains:{" "}
          {backlog.filter((b) => !peers.some((p) => p.domain === b.peerDomain))
            .map((b) => `${b.peerDomain} (${b.pending})`).join(", ")}
        </p>
      ),
      <section aria-labelledby="dead-title" class="dead-letters">
        <h2 id="dead-title">Dead letters ({figure(dead.length)})</h2>
        {dead.length === 0
          ? (
            <p class="muted">
              No outbox entry was given up. An entry dies when its peer keeps refusing it.
            </p>
          )
          : (
            <Table<OutboxEntry>
              caption="Outbox entries given up, newest first"
              rows={dead}
              columns={[
                { label: "Id", cell: (e) => <code>{e.id}</code> },
                { label: "Peer", cell: (e) => e.peerDomain },
                { label: "Event", cell: (e) => <code>{e.eventId}</code> },
                { label: "Attempts", numeric: true, cell: (e) => figure(e.attempts) },
                { label: "Given up", cell: (e) => when(e.deadAt) },
                { label: "Last error", cell: (e) => e.lastError ?? "" },
                {
                  label: "Inspect",
                  cell: (e) => (
                    <details>
                      <summary>Signed event</summary>
                      <pre class="event-body">{JSON.stringify(e.body, null, 2)}</pre>
                    </details>
                  ),
                },
                {
                  label: "Replay",
                  cell: (e) => (
                    <PostForm
                      action={`/peers/dead/${encodeURIComponent(e.id)}/replay`}
                      csrf={csrf}
                      class="inline"
                    >
                      <button
                        type="submit"
                        class="small"
                        aria-label={`Replay outbox entry ${e.id}`}
                      >
                        Replay
                      </button>
                    </PostForm>
                  ),
                },
              ]}
            />
          )}
      </section>,
      <section aria-labelledby="receipts-title" class="remote-offsets">
        <h2 id="receipts-title">Delivery receipts from peers</h2>
        {offsets.length === 0
          ? (
            <p class="muted">
              No peer has reported an acknowledgement yet. When a peer's device acknowledges frames
              sent from here, the peer reports it (a signed offset event) and the sender gets a
              receipt.
            </p>
          )
          : (
            <Table<RemoteOffset>
              caption={`Remote offsets: the last frame each peer device acknowledged, per channel (the ${RECEIPT_ROWS} most recent)`}
              rows={offsets}
              columns={[
                { label: "Peer", cell: (o) => o.peerDomain },
                { label: "Device", cell: (o) => <code>{o.entityId}</code> },
                { label: "Channel", numeric: true, cell: (o) => figure(o.channelId) },
                { label: "Frames acknowledged", numeric: true, cell: (o) => figure(o.ackedFrames) },
                { label: "Last event", cell: (o) => <code>{o.lastEventId}</code> },
                { label: "Acknowledged", cell: (o) => when(o.ackedAt) },
              ]}
            />
          )}
      </section>,
      <section aria-labelledby="add-title">
        <h2 id="add-title">Add a peer</h2>
        {hasErrors && (
          <ErrorBox title="The peer was not added." detail="Correct the fields below." />
        )}
        <PostForm action="/peers" csrf={csrf} class="stacked">
          <Field
            name="domain"
            label="Domain"
            value={form.domain}
            required
            placeholder="chat.example.org"
            error={errors.domain}
          />
          <Field
            name="endpoint"
            label="Federation endpoint"
            value={form.endpoint}
            required
            type="url"
            placeholder="https://chat.example.org/federation"
            error={errors.endpoint}
          />
          <Field
            name="publicKey"
            label="Ed25519 public key"
            value={form.publicKey}
            required
            hint="32 bytes: 64 hex digits or base64."
            error={errors.publicKey}
          />
          <Select
            name="status"
            label="Status"
            value={form.status || "pending"}
            options={PEER_STATUSES.map((s) => [s, s])}
            error={errors.status}
          />
          <div class="form-actions">
            <button type="submit" class="primary">Add peer</button>
          </div>
        </PostForm>
      </section>,
    ]);
  };

  const empty: PeerForm = { domain: "", endpoint: "", publicKey: "", status: "pending" };
  app.get("/peers", (c) => listPage(c, empty, {}));

  app.post("/peers", async (c) => {
    const body = await c.req.parseBody();
    const field = (k: string) =>
      (typeof body[k] === "string" ? body[k] as string : "").slice(0, 2048);
    const form: PeerForm = {
      domain: field("domain"),
      endpoint: field("endpoint"),
      publicKey: field("publicKey"),
      status: field("status"),
    };
    const { peer, errors } = parsePeerForm(form, staticDomains());
    if (!peer) return await listPage(c, form, errors, 400);
    const actor = actorOf(c.get("session")!.label);
    try {
      await addPeer(deps.storage, actor, peer);
    } catch (err) {
      if (err instanceof StorageError && err.status < 500) {
        return await listPage(c, form, { domain: err.message }, err.status);
      }
      throw err;
    }
    deps.log.info("console: federation peer saved", { operator: actor, domain: peer.domain });
    flash(c, "ok", `Peer ${peer.domain} saved as ${peer.status}.`);
    return seeOther(c, "/peers");
  });

  app.post("/peers/:domain/retry", async (c) => {
    const domain = c.req.param("domain");
    const actor = actorOf(c.get("session")!.label);
    await attempt(c, "Nothing was retried", async () => {
      const r = await adminFor(deps.storage, actor).retryPeer(domain);
      deps.log.info("console: peer retry now", { operator: actor, domain, due: r.dueNow });
      flash(
        c,
        "ok",
        r.dueNow === 0
          ? `Nothing of ${domain} was waiting for a retry.`
          : `${r.dueNow} outbox ${r.dueNow === 1 ? "entry" : "entries"} of ${domain} ${
            r.dueNow === 1 ? "is" : "are"
          } due now.`,
      );
    });
    return seeOther(c, "/peers");
  });

  app.post("/peers/dead/:id/replay", async (c) => {
    const id = c.req.param("id");
    const actor = actorOf(c.get("session")!.label);
    await attempt(c, `Entry ${id} was not replayed`, async () => {
      const r = await adminFor(deps.storage, actor).replayDeadLetter(id);
      deps.log.info("console: outbox entry replayed", { operator: actor, id });
      flash(c, "ok", `Outbox entry ${id} for ${r.entry.peerDomain} is pending again, due now.`);
    });
    return seeOther(c, "/peers");
  });

  const parseTarget = (value: string | undefined): PeerStatus => {
    if ((PEER_STATUSES as (string | undefined)[]).includes(value)) return value as PeerStatus;
    throw new PageError(400, "Unknown status", `status must be one of ${PEER_STATUSES.join(", ")}`);
  };

  app.get("/peers/:domain/status", async (c) => {
    const domain = c.req.param("domain");
    const to = parseTarget(c.req.query("to"));
    if (staticDomains().has(domain)) {
      throw new PageError(
        409,
        "Read-only peer",
        `${domain} comes from the config; change it there`,
      );
    }
    const peer = await deps.storage.peers.get(domain);
    if (!peer) throw new PageError(404, "Peer not found", `no federation peer “${domain}”`);
    const effect: Record<PeerStatus, string> = {
      active: "Events are exchanged with this peer.",
      pending: "The peer waits: nothing is sent to it until it becomes active.",
      blocked: "Every event from this peer is refused and nothing is sent to it, on every node.",
    };
    return renderPage(c, deps, { title: `${STATUS_VERB[to]} ${domain}`, active: "peers" }, [
      <PostForm action={peerPath(domain)} csrf={c.get("session")!.csrf} class="confirm">
        <input type="hidden" name="confirm" value="yes" />
        <input type="hidden" name="status" value={to} />
        <p>
          Change <strong>{domain}</strong> from <Badge value={peer.status} /> to{" "}
          <Badge value={to} />? {effect[to]}
        </p>
        <div class="form-actions">
          <button type="submit" class={to === "blocked" ? "danger" : "primary"}>
            {STATUS_VERB[to]} {domain}
          </button>
          <a href="/peers">Cancel</a>
        </div>
      </PostForm>,
    ]);
  });

  app.post("/peers/:domain/status", async (c) => {
    const domain = c.req.param("domain");
    const body = await c.req.parseBody();
    const to = parseTarget(typeof body.status === "string" ? body.status : undefined);
    if (body.confirm !== "yes") return seeOther(c, href(peerPath(domain), { to }));
    const actor = actorOf(c.get("session")!.label);
    await attempt(c, `Peer ${domain} was not changed`, async () => {
      await setPeerStatus(deps.storage, actor, domain, to, staticDomains());
      deps.log.info("console: peer status changed", { operator: actor, domain, status: to });
      flash(c, "ok", `Peer ${domain} is now ${to}.`);
    });
    return seeOther(c, "/peers");
  });
}
