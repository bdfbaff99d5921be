/// <reference lib="dom" />
/**
 * The web chat's state and behaviour, apart from its view: one device's connection over the
 * WebSocket transport, its conversations (1:1 and groups), presence, delivery receipts, the
 * offline queue (messages written while disconnected leave once the connection is back) and
 * end-to-end sealing (client/e2e.ts). The view (chat_app.tsx) renders {@link ChatSession.view}
 * and calls the methods; every change calls the `onChange` callback.
 *
 * Messages travel as the command-line chat's envelopes (client/chat_envelope.ts), with two
 * optional fields the web chat adds so a recipient knows the conversation on first contact:
 * `members` (every member's device id) and, for a group, `group_id`.
 *
 * @module
 */
import {
  type Client,
  CommuCatError,
  connect,
  directChannelId,
  E2EError,
  groupChannelId,
  type InboundMessage,
} from "../../client/browser.ts";
import type { BrowserDevice, BrowserKeystore } from "../../client/browser_keystore.ts";
import { decodeEnvelope, messageId } from "../../client/chat_envelope.ts";
import { isId } from "../../protocol/ids.ts";

/** What the page was rendered with: the server it belongs to. */
export interface ServerInfo {
  /** The server's Noise static public key, 64 hex characters. */
  serverKey: string;
  /** The same in groups of four, as the page shows it. */
  serverFingerprint: string;
  domain: string;
  prologue: string;
  /** The WebSocket URL of /connect (default: this page's origin). */
  wsUrl?: string;
}

/** One line of a conversation. */
export interface ChatLine {
  id: string;
  from: string;
  text: string;
  at: string;
  mine: boolean;
  /** Outgoing: queued (offline) → sending → sent (server ACK) → delivered (receipt); failed. */
  status?: "queued" | "sending" | "sent" | "delivered" | "failed";
  /** Outgoing: the devices whose receipts came back. */
  deliveredTo: string[];
  /** Sealed end to end (and opened), and whether the sender's key is a verified one. */
  sealed: boolean;
  verified: boolean;
  /** Why a message failed to send, or why a received one could not be opened. */
  error?: string;
}

/** A conversation: a 1:1 (two members) or a group. */
export interface ChatConversation {
  channel: number;
  /** Every member, this device included. */
  members: string[];
  groupId?: string;
  title: string;
  lines: ChatLine[];
  unread: number;
  /** The join failed: why (the conversation is shown, sending will fail too). */
  joinError?: string;
}

export type ConnectionState = "connecting" | "online" | "reconnecting" | "offline";

/** A snapshot for the view. */
export interface SessionView {
  device: { deviceId: string; name: string; fingerprint: string };
  connection: ConnectionState;
  connectionDetail: string;
  conversations: ChatConversation[];
  /** Channel of the open conversation. */
  current: number | null;
  /** Device id → its last presence state. */
  presence: Record<string, string>;
  /** Seal messages end to end (default: whenever the server offers the key directory). */
  seal: boolean;
  /**
   * Whether sealing can work here: the server answers the key directory request (`keys`).
   * null until known; false with `sealNote` saying why.
   */
  sealAvailable: boolean | null;
  sealNote: string;
  /** Devices whose key changed and waits for the user to accept it. */
  keyChanges: { device: string; wasVerified: boolean }[];
  notice: string | null;
}

/** Most conversations kept per device, and lines kept per conversation. */
export const MAX_CONVERSATIONS = 64;
export const MAX_LINES = 500;

const encoder = new TextEncoder();

function storageKey(deviceId: string): string {
  return `commucat:${deviceId}:conversations`;
}

/** The chat of one device in this tab. */
export class ChatSession {
  readonly device: BrowserDevice;
  #keystore: BrowserKeystore;
  #server: ServerInfo;
  #client: Client | null = null;
  #onChange: () => void;
  #conversations = new Map<number, ChatConversation>();
  #current: number | null = null;
  #presence: Record<string, string> = {};
  #connection: ConnectionState = "connecting";
  #connectionDetail = "";
  #seal = false;
  #sealAvailable: boolean | null = null;
  #sealNote = "";
  #keyChanges: { device: string; wasVerified: boolean }[] = [];
  #notice: string | null = null;
  #flushing = false;
  #closed = false;
  /** Joins in progress or done on the current connection, by channel. */
  #joins = new Map<number, Promise<void>>();

  constructor(
    device: BrowserDevice,
    keystore: BrowserKeystore,
    server: ServerInfo,
    onChange: () => void,
  ) {
    this.device = device;
    this.#keystore = keystore;
    this.#server = server;
    this.#onChange = onChange;
    this.#restore();
  }

  /** The snapshot the view renders. */
  get view(): SessionView {
    return {
      device: {
        deviceId: this.device.deviceId,
        name: this.device.name,
        fingerprint: this.device.fingerprint,
      },
      connection: this.#connection,
      connectionDetail: this.#connectionDetail,
      conversations: [...this.#conversations.values()],
      current: this.#current,
      presence: { ...this.#presence },
      seal: this.#seal,
      sealAvailable: this.#sealAvailable,
      sealNote: this.#sealNote,
      keyChanges: [...this.#keyChanges],
      notice: this.#notice,
    };
  }

  get client(): Client | null {
    return this.#client;
  }

  #changed(): void {
    if (!this.#closed) this.#onChange();
  }

  /** Connects (the first attempt's refusal is thrown: pending approval, wrong server key…). */
  async start(): Promise<void> {
    this.#connection = "connecting";
    this.#changed();
    const trust = await this.#keystore.trustStore(this.device.deviceId);
    let client: Client;
    try {
      client = await connect({
        transport: "ws",
        url: this.#server.wsUrl,
        deviceId: this.device.deviceId,
        keypair: this.device.keypair,
        serverKey: this.#server.serverKey,
        prologue: this.#server.prologue,
        user: { handle: this.device.deviceId, display_name: this.device.name },
        reconnect: { initialDelayMs: 500, maxDelayMs: 5_000 },
        e2e: { trust },
      });
    } catch (error) {
      this.#connection = "offline";
      this.#connectionDetail = describe(error);
      this.#changed();
      throw error;
    }
    if (this.#closed) {
      await client.close();
      return;
    }
    this.#client = client;
    this.#connection = "online";
    this.#connectionDetail = "";
    client.on("disconnected", (reason) => {
      this.#connection = "reconnecting";
      this.#connectionDetail = reason.detail || reason.title;
      this.#changed();
    });
    client.on("connected", () => {
      this.#connection = "online";
      this.#connectionDetail = "";
      this.#changed();
      this.#flush();
    });
    client.on("closed", (reason) => {
      this.#connection = "offline";
      this.#connectionDetail = reason ? reason.detail || reason.title : "closed";
      this.#changed();
    });
    client.on("error", (error) => {
      this.#notice = `${error.title}: ${error.detail}`;
      this.#changed();
    });
    client.e2e?.on("key-changed", (change) => {
      if (!this.#keyChanges.some((k) => k.device === change.device)) {
        this.#keyChanges.push({ device: change.device, wasVerified: change.wasVerified });
      }
      this.#changed();
    });
    this.#changed();
    await this.#probeSealing(client);
    for (const conversation of this.#conversations.values()) await this.#join(conversation);
    this.#pump(client);
    this.#flush();
  }

  /**
   * Asks the key directory for this device's own key: a server that answers can have messages
   * sealed to its devices. One that cannot (an older server) leaves sealing off, and the view
   * says so; nothing is silently sent in the clear while the user believes it sealed.
   */
  async #probeSealing(client: Client): Promise<void> {
    try {
      await client.e2e!.lookup([this.device.deviceId], true);
      this.#sealAvailable = true;
      this.#seal = true;
      this.#sealNote = "";
    } catch (error) {
      this.#sealAvailable = false;
      this.#seal = false;
      this.#sealNote = `this server offers no key directory (${describe(error)}): messages ` +
        "are protected on the way to the server but the server can read them";
    }
    this.#changed();
  }

  async #pump(client: Client): Promise<void> {
    for await (const message of client.messages()) {
      try {
        await this.#receive(message);
      } catch (error) {
        this.#notice = `a received message could not be handled: ${describe(error)}`;
        this.#changed();
      }
      // Handled (shown and saved): the server may forget its copy.
      message.ack();
    }
  }

  async #receive(message: InboundMessage): Promise<void> {
    if (message.kind === "PRESENCE") {
      if (message.peer && message.state) {
        this.#presence[message.peer] = message.state;
        this.#changed();
      }
      return;
    }
    if (message.kind !== "MSG") return;
    const body = message.sealed ? message.plaintext : message.payload;
    const sender = message.sender;
    if (message.sealed && (body === null || message.e2eError)) {
      const conversation = await this.#conversationFor(message.channel, sender, {});
      this.#append(conversation, {
        id: `refused-${message.sequence}-${Date.now()}`,
        from: sender ?? "unknown sender",
        text: "",
        at: new Date().toISOString(),
        mine: false,
        deliveredTo: [],
        sealed: true,
        verified: false,
        error: message.e2eError ? message.e2eError.message : "the sealed message did not open",
      });
      return;
    }
    const raw = extraFields(body!);
    const envelope = decodeEnvelope(body!);
    if ("raw" in envelope) {
      const conversation = await this.#conversationFor(message.channel, sender, raw);
      this.#append(conversation, {
        id: `raw-${message.sequence}-${Date.now()}`,
        from: sender ?? "another client",
        text: envelope.raw,
        at: new Date().toISOString(),
        mine: false,
        deliveredTo: [],
        sealed: message.sealed ?? false,
        verified: message.verified ?? false,
      });
      return;
    }
    // The server's stamp (sender capability) or the sealed envelope's sender wins over the
    // name written inside the payload.
    const from = sender ?? envelope.from;
    const conversation = await this.#conversationFor(message.channel, from, raw);
    if (envelope.kind === "receipt") {
      const line = conversation.lines.find((l) => l.mine && l.id === envelope.id);
      if (line && !line.deliveredTo.includes(from)) {
        line.deliveredTo.push(from);
        line.status = "delivered";
        this.#save();
        this.#changed();
      }
      return;
    }
    if (from === this.device.deviceId) return; // our own copy from another tab: ignored
    const fresh = this.#append(conversation, {
      id: envelope.id,
      from,
      text: envelope.text,
      at: envelope.sent_at || new Date().toISOString(),
      mine: false,
      deliveredTo: [],
      sealed: message.sealed ?? false,
      verified: message.verified ?? false,
    });
    // A receipt for every copy (a redelivered one is answered again: its first receipt may be
    // the one that was lost), sealed when the message was.
    const receipt = {
      v: 1,
      kind: "receipt",
      id: envelope.id,
      from: this.device.deviceId,
    };
    this.#transmitRaw(conversation, receipt, message.sealed === true).catch(() => {});
    if (fresh && this.#current !== conversation.channel) conversation.unread++;
  }

  /** The conversation of `channel`, created (and joined) on first contact. */
  async #conversationFor(
    channel: number,
    from: string | undefined,
    hints: { members?: string[]; group_id?: string },
  ): Promise<ChatConversation> {
    const known = this.#conversations.get(channel);
    if (known) return known;
    const me = this.device.deviceId;
    let conversation: ChatConversation;
    if (typeof hints.group_id === "string" && groupChannelId(hints.group_id) === channel) {
      const members = [...new Set([me, ...(hints.members ?? []), ...(from ? [from] : [])])];
      conversation = {
        channel,
        members,
        groupId: hints.group_id,
        title: `# ${hints.group_id}`,
        lines: [],
        unread: 0,
      };
    } else {
      const peer = from && from !== me ? from : "unknown";
      conversation = { channel, members: [me, peer], title: peer, lines: [], unread: 0 };
    }
    this.#add(conversation);
    await this.#join(conversation);
    return conversation;
  }

  #add(conversation: ChatConversation): void {
    if (this.#conversations.size >= MAX_CONVERSATIONS) {
      // The one with the oldest last line goes.
      const oldest = [...this.#conversations.values()].sort((a, b) =>
        (a.lines.at(-1)?.at ?? "").localeCompare(b.lines.at(-1)?.at ?? "")
      )[0];
      this.#conversations.delete(oldest.channel);
    }
    this.#conversations.set(conversation.channel, conversation);
    this.#current ??= conversation.channel;
    this.#save();
    this.#changed();
  }

  #join(conversation: ChatConversation): Promise<void> {
    const joining = this.#joinNow(conversation);
    this.#joins.set(conversation.channel, joining);
    return joining;
  }

  async #joinNow(conversation: ChatConversation): Promise<void> {
    const client = this.#client;
    if (!client) return;
    try {
      await client.join(
        conversation.channel,
        conversation.members,
        conversation.groupId ? { groupId: conversation.groupId } : {},
      );
      conversation.joinError = undefined;
    } catch (error) {
      conversation.joinError = describe(error);
    }
    this.#changed();
  }

  /** Appends a line unless its id is there already; true when it was new. */
  #append(conversation: ChatConversation, line: ChatLine): boolean {
    if (conversation.lines.some((l) => l.id === line.id && l.mine === line.mine)) return false;
    conversation.lines.push(line);
    if (conversation.lines.length > MAX_LINES) conversation.lines.splice(0, 100);
    this.#save();
    this.#changed();
    return true;
  }

  /** Starts a 1:1 with `peer`, or a group named `groupName` with `peers`. */
  async startConversation(peers: string[], groupName?: string): Promise<number> {
    const me = this.device.deviceId;
    const others = [...new Set(peers.map((p) => p.trim()).filter((p) => p !== "" && p !== me))];
    for (const peer of others) {
      if (!isId(peer)) throw new Error(`${JSON.stringify(peer)} is not a device id`);
    }
    if (others.length === 0) throw new Error("name at least one other device");
    let conversation: ChatConversation;
    if (others.length === 1 && !groupName) {
      const channel = directChannelId(me, others[0]);
      const known = this.#conversations.get(channel);
      if (known) {
        this.select(channel);
        return channel;
      }
      conversation = { channel, members: [me, others[0]], title: others[0], lines: [], unread: 0 };
    } else {
      const base = (groupName ?? "group").normalize("NFKD").replace(/[^A-Za-z0-9]+/g, "-")
        .replace(/^-+|-+$/g, "").toLowerCase().slice(0, 40) || "group";
      const groupId = `${base}-${messageId().slice(0, 8)}`;
      const client = this.#requireClient();
      await client.createGroup({ groupId, members: [me, ...others] });
      conversation = {
        channel: groupChannelId(groupId),
        members: [me, ...others],
        groupId,
        title: `# ${groupName || groupId}`,
        lines: [],
        unread: 0,
      };
    }
    this.#add(conversation);
    this.#current = conversation.channel;
    await this.#join(conversation);
    return conversation.channel;
  }

  /** Opens a conversation (its unread count goes to zero). */
  select(channel: number): void {
    const conversation = this.#conversations.get(channel);
    if (!conversation) return;
    this.#current = channel;
    conversation.unread = 0;
    this.#changed();
  }

  /** Seal outgoing messages end to end (or not). */
  setSeal(seal: boolean): void {
    this.#seal = seal && this.#sealAvailable === true;
    this.#changed();
  }

  dismissNotice(): void {
    this.#notice = null;
    this.#changed();
  }

  /** Sends `text` in the open conversation: now when online, else when the connection is back. */
  send(text: string): void {
    const conversation = this.#current === null
      ? undefined
      : this.#conversations.get(this.#current);
    if (!conversation || text.trim() === "") return;
    const line: ChatLine = {
      id: messageId(),
      from: this.device.deviceId,
      text,
      at: new Date().toISOString(),
      mine: true,
      status: "queued",
      deliveredTo: [],
      sealed: this.#seal,
      verified: false,
    };
    this.#append(conversation, line);
    this.#flush();
  }

  /** Sends the queued lines, oldest first, one at a time; stops at the first that cannot go. */
  async #flush(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      for (;;) {
        const client = this.#client;
        if (!client || !client.connected) return;
        const next = this.#nextQueued();
        if (!next) return;
        const [conversation, line] = next;
        line.status = "sending";
        this.#changed();
        const envelope: Record<string, unknown> = {
          v: 1,
          kind: "text",
          id: line.id,
          from: this.device.deviceId,
          sent_at: line.at,
          text: line.text,
        };
        try {
          await this.#transmitRaw(conversation, envelope, line.sealed);
          if (line.status === "sending") line.status = "sent";
          line.error = undefined;
        } catch (error) {
          // The connection went down under it (closed, lost, replaced): it waits for the next.
          const down = !client.connected ||
            (error instanceof CommuCatError && error.title === "Connection Closed");
          if (down) {
            line.status = "queued"; // back to the queue: it leaves on the next connection
            this.#save();
            this.#changed();
            return;
          }
          line.status = "failed";
          line.error = describe(error);
        }
        this.#save();
        this.#changed();
      }
    } finally {
      this.#flushing = false;
    }
  }

  #nextQueued(): [ChatConversation, ChatLine] | null {
    let best: [ChatConversation, ChatLine] | null = null;
    for (const conversation of this.#conversations.values()) {
      for (const line of conversation.lines) {
        if (line.mine && line.status === "queued" && (!best || line.at < best[1].at)) {
          best = [conversation, line];
        }
      }
    }
    return best;
  }

  async #transmitRaw(
    conversation: ChatConversation,
    envelope: Record<string, unknown>,
    sealed: boolean,
  ): Promise<void> {
    const client = this.#requireClient();
    await this.#joins.get(conversation.channel);
    const body = {
      ...envelope,
      members: conversation.members,
      ...(conversation.groupId ? { group_id: conversation.groupId } : {}),
    };
    const bytes = encoder.encode(JSON.stringify(body));
    if (sealed) await client.sendSealed(conversation.channel, bytes);
    else await client.send(conversation.channel, bytes);
  }

  /** Retries a failed line. */
  retry(lineId: string): void {
    for (const conversation of this.#conversations.values()) {
      const line = conversation.lines.find((l) => l.mine && l.id === lineId);
      if (line && line.status === "failed") {
        line.status = "queued";
        line.error = undefined;
      }
    }
    this.#changed();
    this.#flush();
  }

  /** The safety number with the peer of a 1:1 (compare it with the peer, out of band). */
  async safetyNumber(device: string): Promise<string> {
    const e2e = this.#requireClient().e2e;
    if (!e2e) throw new Error("end-to-end encryption is not enabled");
    return await e2e.safetyNumber(device);
  }

  /** Marks the peer's current key as verified (after comparing safety numbers). */
  async setVerified(device: string, verified: boolean): Promise<void> {
    await this.#requireClient().e2e?.setVerified(device, verified);
    this.#changed();
  }

  /** Whether the user verified the peer's current key. */
  isVerified(device: string): boolean {
    return this.#client?.e2e?.trust.get(device)?.verified ?? false;
  }

  /** Accepts a changed key; the messages held meanwhile are shown. */
  async acceptKey(device: string): Promise<void> {
    const e2e = this.#requireClient().e2e;
    if (!e2e) return;
    const held = await e2e.acceptKey(device);
    this.#keyChanges = this.#keyChanges.filter((k) => k.device !== device);
    for (const message of held) {
      await this.#receive(message as unknown as InboundMessage);
    }
    this.#changed();
  }

  #requireClient(): Client {
    if (!this.#client) throw new Error("not connected yet");
    return this.#client;
  }

  #save(): void {
    try {
      const data = [...this.#conversations.values()].map((c) => ({
        channel: c.channel,
        members: c.members,
        groupId: c.groupId,
        title: c.title,
        lines: c.lines.slice(-MAX_LINES),
      }));
      localStorage.setItem(storageKey(this.device.deviceId), JSON.stringify(data));
    } catch {
      // Storage full or unavailable: the chat goes on without keeping history.
    }
  }

  #restore(): void {
    let data: unknown;
    try {
      data = JSON.parse(localStorage.getItem(storageKey(this.device.deviceId)) ?? "[]");
    } catch {
      data = [];
    }
    if (!Array.isArray(data)) return;
    for (const item of data.slice(0, MAX_CONVERSATIONS)) {
      if (
        typeof item?.channel !== "number" || !Array.isArray(item.members) ||
        !item.members.every(isId) || !Array.isArray(item.lines)
      ) continue;
      this.#conversations.set(item.channel, {
        channel: item.channel,
        members: item.members,
        groupId: typeof item.groupId === "string" ? item.groupId : undefined,
        title: typeof item.title === "string" ? item.title : String(item.channel),
        lines: item.lines.filter((l: ChatLine) => typeof l?.id === "string").map((l: ChatLine) =>
          // A line caught "sending" when the page closed goes out again (the receiver's
          // dedupe by id keeps it once).
          l.status === "sending" ? { ...l, status: "queued" as const } : l
        ),
        unread: 0,
      });
      this.#current ??= item.channel;
    }
  }

  /** Closes the connection (the tab closes or another device is chosen). */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#client?.close();
  }
}

/** The optional conversation fields the web chat adds to the envelope. */
function extraFields(body: Uint8Array): { members?: string[]; group_id?: string } {
  try {
    const v = JSON.parse(new TextDecoder().decode(body));
    const out: { members?: string[]; group_id?: string } = {};
    if (Array.isArray(v?.members) && v.members.length <= 64 && v.members.every(isId)) {
      out.members = v.members;
    }
    if (typeof v?.group_id === "string" && isId(v.group_id)) out.group_id = v.group_id;
    return out;
  } catch {
    return {};
  }
}

/** A readable reason from any error. */
export function describe(error: unknown): string {
  if (error instanceof CommuCatError) {
    return error.detail ? `${error.title}: ${error.detail}` : error.title;
  }
  if (error instanceof E2EError) return error.message;
  return error instanceof Error ? error.message : String(error);
}
