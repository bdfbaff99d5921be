/// <reference lib="dom" />
/**
 * The web chat island. Server-rendered in its first state (the server's fingerprint, "loading"),
 * then in the browser: choose which of this browser's devices this tab is (or create or import
 * one), and chat as it. A device is used by one tab at a time (a Web Lock per device), so two
 * tabs are two devices.
 */
import { useEffect, useRef, useState } from "preact/hooks";
import { type BrowserDeviceSummary, BrowserKeystore } from "../../client/browser_keystore.ts";
import { ChatSession, describe, type ServerInfo, type SessionView } from "./session.ts";

export type ChatAppProps = ServerInfo;

const LOCK_PREFIX = "commucat-device:";
const TAB_DEVICE = "commucat:tab-device";

type Stage =
  | { kind: "loading" }
  | { kind: "choose"; devices: BrowserDeviceSummary[]; busy: string[]; error: string | null }
  | { kind: "chat"; session: ChatSession; view: SessionView }
  | { kind: "failed"; error: string };

/** Which device ids other tabs hold now. */
async function heldElsewhere(): Promise<string[]> {
  if (!navigator.locks) return [];
  const state = await navigator.locks.query();
  return (state.held ?? [])
    .map((l) => l.name ?? "")
    .filter((n) => n.startsWith(LOCK_PREFIX))
    .map((n) => n.slice(LOCK_PREFIX.length));
}

/** Holds the device's lock for as long as this tab uses it; false when another tab has it. */
function lockDevice(deviceId: string, until: Promise<void>): Promise<boolean> {
  if (!navigator.locks) return Promise.resolve(true);
  return new Promise((resolve) => {
    navigator.locks.request(LOCK_PREFIX + deviceId, { ifAvailable: true }, (lock) => {
      resolve(lock !== null);
      return lock === null ? undefined : until;
    });
  });
}

function download(name: string, text: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function ChatApp(props: ChatAppProps) {
  const [stage, setStage] = useState<Stage>({ kind: "loading" });
  const keystore = useRef<BrowserKeystore | null>(null);
  const release = useRef<(() => void) | null>(null);
  const active = useRef<ChatSession | null>(null);

  const refresh = async (error: string | null = null) => {
    const ks = keystore.current!;
    setStage({ kind: "choose", devices: await ks.list(), busy: await heldElsewhere(), error });
  };

  useEffect(() => {
    (async () => {
      try {
        keystore.current = await BrowserKeystore.open();
      } catch (error) {
        setStage({ kind: "failed", error: describe(error) });
        return;
      }
      const again = sessionStorage.getItem(TAB_DEVICE);
      const devices = await keystore.current.list();
      if (again && devices.some((d) => d.deviceId === again)) {
        await use(again);
      } else {
        await refresh();
      }
    })();
    const leave = () => {
      active.current?.close();
    };
    globalThis.addEventListener("pagehide", leave);
    return () => globalThis.removeEventListener("pagehide", leave);
  }, []);

  const use = async (deviceId: string) => {
    const ks = keystore.current!;
    let done!: () => void;
    const until = new Promise<void>((resolve) => (done = resolve));
    if (!(await lockDevice(deviceId, until))) {
      await refresh(`device ${deviceId} is in use in another tab`);
      return;
    }
    release.current = done;
    let device;
    try {
      device = await ks.load(deviceId);
    } catch (error) {
      done();
      await refresh(describe(error));
      return;
    }
    sessionStorage.setItem(TAB_DEVICE, deviceId);
    const update = () => setStage({ kind: "chat", session, view: session.view });
    const session: ChatSession = new ChatSession(device, ks, props, update);
    active.current = session;
    update();
    session.start().catch(() => {
      // The view shows the reason (connectionDetail) with a retry button.
    });
  };

  const leaveDevice = async () => {
    await active.current?.close();
    active.current = null;
    release.current?.();
    release.current = null;
    sessionStorage.removeItem(TAB_DEVICE);
    await refresh();
  };

  return (
    <div class="chat-app">
      <header class="top">
        <strong class="brand">CommuCat</strong>
        <span class="server">
          Server <code>{props.domain}</code> key{" "}
          <code class="key" data-testid="server-fingerprint">{props.serverFingerprint}</code>
        </span>
        {stage.kind === "chat" && (
          <ConnectionBadge state={stage.view.connection} detail={stage.view.connectionDetail} />
        )}
      </header>
      {stage.kind === "loading" && (
        <main class="center">
          <p role="status">Opening this browser's device keys…</p>
          <noscript>
            The web chat needs JavaScript: keys and encryption live in your browser.
          </noscript>
        </main>
      )}
      {stage.kind === "failed" && (
        <main class="center">
          <p class="flash error" role="alert">{stage.error}</p>
        </main>
      )}
      {stage.kind === "choose" && (
        <Chooser
          devices={stage.devices}
          busy={stage.busy}
          error={stage.error}
          onUse={use}
          onCreate={async (name) => {
            try {
              const device = await keystore.current!.create(name);
              await use(device.deviceId);
            } catch (error) {
              await refresh(describe(error));
            }
          }}
          onImport={async (text) => {
            try {
              const device = await keystore.current!.importKeyFile(text);
              await refresh(`imported device ${device.deviceId}`);
            } catch (error) {
              await refresh(describe(error));
            }
          }}
          onRemove={async (deviceId) => {
            await keystore.current!.remove(deviceId);
            await refresh();
          }}
        />
      )}
      {stage.kind === "chat" && (
        <Chat
          session={stage.session}
          view={stage.view}
          onLeave={leaveDevice}
          onExport={async () => {
            const id = stage.view.device.deviceId;
            download(`${id}.json`, await keystore.current!.exportKeyFile(id));
          }}
        />
      )}
    </div>
  );
}

function ConnectionBadge(props: { state: string; detail: string }) {
  const label: Record<string, string> = {
    connecting: "connecting…",
    online: "online",
    reconnecting: "reconnecting…",
    offline: "offline",
  };
  return (
    <span
      class={`badge conn-${props.state}`}
      role="status"
      data-testid="connection"
      title={props.detail}
    >
      {label[props.state] ?? props.state}
    </span>
  );
}

function Chooser(props: {
  devices: BrowserDeviceSummary[];
  busy: string[];
  error: string | null;
  onUse: (id: string) => void;
  onCreate: (name: string) => void;
  onImport: (text: string) => void;
  onRemove: (id: string) => void;
}) {
  const [name, setName] = useState("");
  return (
    <main class="chooser">
      <h1>This browser is a device</h1>
      <p>
        Each device has its own key, made and kept in this browser (wrapped by a key the browser
        never lets out). The server learns the device id and its public key; tell your contacts the
        device id.
      </p>
      {props.error && <p class="flash error" role="alert">{props.error}</p>}
      {props.devices.length > 0 && (
        <section aria-labelledby="held">
          <h2 id="held">Devices in this browser</h2>
          <ul class="devices">
            {props.devices.map((d) => {
              const busy = props.busy.includes(d.deviceId);
              return (
                <li key={d.deviceId}>
                  <span>
                    <strong>{d.name}</strong> <code>{d.deviceId}</code>
                    <br />
                    <code class="key small">{d.fingerprint}</code>
                  </span>
                  {busy ? <em>open in another tab</em> : (
                    <button
                      type="button"
                      data-testid={`use-${d.deviceId}`}
                      onClick={() => props.onUse(d.deviceId)}
                    >
                      Use
                    </button>
                  )}
                  {!busy && (
                    <button
                      type="button"
                      class="quiet"
                      onClick={() => {
                        if (confirm(`Forget device ${d.deviceId} and its key in this browser?`)) {
                          props.onRemove(d.deviceId);
                        }
                      }}
                    >
                      Forget
                    </button>
                  )}
                </li>
              );
            })}
          </ul>
        </section>
      )}
      <section aria-labelledby="new">
        <h2 id="new">New device</h2>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            if (name.trim()) props.onCreate(name.trim());
          }}
        >
          <label>
            Device name{" "}
            <input
              name="device-name"
              value={name}
              maxLength={64}
              required
              placeholder="e.g. alice laptop"
              onInput={(e) => setName((e.target as HTMLInputElement).value)}
            />
          </label>{" "}
          <button type="submit">Create</button>
        </form>
        <p>
          <label>
            Or import a key file{" "}
            <input
              type="file"
              accept="application/json,.json"
              onChange={async (e) => {
                const file = (e.target as HTMLInputElement).files?.[0];
                if (file) props.onImport(await file.text());
              }}
            />
          </label>
        </p>
      </section>
    </main>
  );
}

function statusText(line: { status?: string; deliveredTo: string[] }, members: number): string {
  switch (line.status) {
    case "queued":
      return "queued (offline)";
    case "sending":
      return "sending…";
    case "sent":
      return "sent ✓";
    case "delivered":
      return members > 2 ? `delivered to ${line.deliveredTo.length} ✓✓` : "delivered ✓✓";
    case "failed":
      return "not sent";
    default:
      return "";
  }
}

function Chat(props: {
  session: ChatSession;
  view: SessionView;
  onLeave: () => void;
  onExport: () => void;
}) {
  const { session, view } = props;
  const [peers, setPeers] = useState("");
  const [groupName, setGroupName] = useState("");
  const [draft, setDraft] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [safety, setSafety] = useState<{ device: string; number: string } | null>(null);
  const current = view.conversations.find((c) => c.channel === view.current) ?? null;
  const me = view.device.deviceId;
  const peer = current && !current.groupId ? current.members.find((m) => m !== me) : undefined;
  const log = useRef<HTMLOListElement>(null);
  useEffect(() => {
    log.current?.lastElementChild?.scrollIntoView({ block: "end" });
  }, [current?.lines.length, view.current]);

  return (
    <div class="chat">
      <aside class="side">
        <section class="me" aria-label="This device">
          <div>
            <strong>{view.device.name}</strong>
          </div>
          <div>
            device <code data-testid="device-id">{me}</code>
          </div>
          <div>
            key{" "}
            <code class="key small" data-testid="device-fingerprint">
              {view.device.fingerprint}
            </code>
          </div>
          <div class="row">
            <button type="button" class="quiet" onClick={props.onExport}>Export key file</button>
            <button type="button" class="quiet" onClick={props.onLeave}>Switch device</button>
          </div>
        </section>
        <form
          class="new-chat"
          onSubmit={async (e) => {
            e.preventDefault();
            setError(null);
            try {
              await session.startConversation(peers.split(/[\s,]+/), groupName.trim() || undefined);
              setPeers("");
              setGroupName("");
            } catch (err) {
              setError(describe(err));
            }
          }}
        >
          <label>
            Chat with (device ids)
            <input
              name="peers"
              value={peers}
              required
              placeholder="bob-laptop-1a2b3c4d"
              onInput={(e) => setPeers((e.target as HTMLInputElement).value)}
            />
          </label>
          <label>
            Group name (for a group)
            <input
              name="group"
              value={groupName}
              placeholder="optional"
              onInput={(e) => setGroupName((e.target as HTMLInputElement).value)}
            />
          </label>
          <button type="submit">Start chat</button>
          {error && <p class="flash error" role="alert">{error}</p>}
        </form>
        <nav aria-label="Conversations">
          <ul class="conversations">
            {view.conversations.map((c) => (
              <li key={c.channel}>
                <button
                  type="button"
                  class={c.channel === view.current ? "current" : ""}
                  data-testid={`conversation-${c.title}`}
                  onClick={() => session.select(c.channel)}
                >
                  {c.title}
                  {c.unread > 0 && <span class="unread">{c.unread}</span>}
                </button>
              </li>
            ))}
          </ul>
        </nav>
      </aside>
      <main class="conversation">
        {view.notice && (
          <p class="flash warn" role="alert">
            {view.notice}{" "}
            <button type="button" class="quiet" onClick={() => session.dismissNotice()}>
              dismiss
            </button>
          </p>
        )}
        {view.connection === "offline" && (
          <p class="flash error" role="alert">
            Not connected: {view.connectionDetail}{" "}
            <button type="button" onClick={() => session.start().catch(() => {})}>Retry</button>
          </p>
        )}
        {view.sealAvailable === false && (
          <p class="flash warn" data-testid="seal-note">Not sealed end to end: {view.sealNote}.</p>
        )}
        {view.keyChanges.map((k) => (
          <p class="flash error" role="alert" key={k.device}>
            The key of <code>{k.device}</code>{" "}
            changed{k.wasVerified ? " (it was verified)" : ""}. Messages to and from it wait until
            you accept the new key.{" "}
            <button type="button" onClick={() => session.acceptKey(k.device)}>
              Accept new key
            </button>
          </p>
        ))}
        {current === null
          ? (
            <p class="empty">
              Start a chat with another device's id (open this page in a second tab to make one).
            </p>
          )
          : (
            <>
              <header class="conversation-head">
                <h2>{current.title}</h2>
                <ul class="members" aria-label="Members">
                  {current.members.filter((m) => m !== me).map((m) => (
                    <li
                      key={m}
                      data-testid={`presence-${m}`}
                      data-state={view.presence[m] ?? "unknown"}
                    >
                      <span class={`dot ${view.presence[m] ?? "unknown"}`} aria-hidden="true" />
                      {m} <small>{view.presence[m] ?? "unknown"}</small>
                    </li>
                  ))}
                </ul>
                {peer && view.sealAvailable && (
                  <button
                    type="button"
                    class="quiet"
                    onClick={async () => {
                      try {
                        setSafety({ device: peer, number: await session.safetyNumber(peer) });
                      } catch (err) {
                        setError(describe(err));
                      }
                    }}
                  >
                    Safety number{session.isVerified(peer) ? " (verified)" : ""}
                  </button>
                )}
                {current.joinError && <p class="flash error">{current.joinError}</p>}
              </header>
              {safety && safety.device === peer && (
                <div class="safety" role="dialog" aria-label="Safety number">
                  <p>
                    Compare this number with{" "}
                    <code>{peer}</code>'s screen (in person or on a call). When they match, no one
                    sits between you.
                  </p>
                  <p class="number" data-testid="safety-number">{safety.number}</p>
                  <button
                    type="button"
                    onClick={async () => {
                      await session.setVerified(peer!, true);
                      setSafety(null);
                    }}
                  >
                    They match: mark verified
                  </button>{" "}
                  <button
                    type="button"
                    class="quiet"
                    onClick={() =>
                      setSafety(null)}
                  >
                    Close
                  </button>
                </div>
              )}
              <ol class="lines" ref={log} data-testid="lines">
                {current.lines.map((line) => (
                  <li
                    key={`${line.mine ? "m" : "t"}-${line.id}`}
                    class={line.mine ? "mine" : "theirs"}
                    data-testid="line"
                  >
                    <div class="meta">
                      <span class="from">{line.mine ? "you" : line.from}</span>{" "}
                      <time dateTime={line.at}>{new Date(line.at).toLocaleTimeString()}</time>
                      {line.sealed && (
                        <span class="sealed" title="sealed end to end">
                          sealed{line.verified ? " · verified" : ""}
                        </span>
                      )}
                    </div>
                    {line.text && <div class="text" data-testid="text">{line.text}</div>}
                    {line.error && <div class="line-error">{line.error}</div>}
                    {line.mine && (
                      <div class="status" data-testid="status" data-status={line.status}>
                        {statusText(line, current.members.length)}
                        {line.status === "failed" && (
                          <button
                            type="button"
                            class="quiet"
                            onClick={() => session.retry(line.id)}
                          >
                            retry
                          </button>
                        )}
                      </div>
                    )}
                  </li>
                ))}
              </ol>
              <form
                class="compose"
                onSubmit={(e) => {
                  e.preventDefault();
                  session.send(draft);
                  setDraft("");
                }}
              >
                <input
                  name="message"
                  value={draft}
                  autocomplete="off"
                  placeholder={view.connection === "online"
                    ? "Message"
                    : "Message (sent when the connection is back)"}
                  aria-label="Message"
                  onInput={(e) => setDraft((e.target as HTMLInputElement).value)}
                />
                <label class="seal" title={view.sealNote}>
                  <input
                    type="checkbox"
                    data-testid="seal"
                    checked={view.seal}
                    disabled={view.sealAvailable !== true}
                    onChange={(e) => session.setSeal((e.target as HTMLInputElement).checked)}
                  />{" "}
                  seal end to end
                </label>
                <button type="submit">Send</button>
              </form>
            </>
          )}
      </main>
    </div>
  );
}
