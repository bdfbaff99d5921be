/**
 * A small CCP-1 client for the relay's tests: TCP, TLS or HTTP /connect; XK or IK; v1 or v2.
 * Independent of the SDK on purpose, so server tests do not move with it and can misbehave
 * (claim a wrong key, send raw bytes).
 */
import assert from "node:assert/strict";
import { concatChunks } from "../../../protocol/bytes.ts";
import {
  encodeControl,
  encodeFrame,
  type Frame,
  FrameDecoder,
  FrameType,
} from "../../../protocol/frame.ts";
import { HandshakeState } from "../../../protocol/noise.ts";
import { generateKeypair, type Keypair } from "../../../protocol/crypto.ts";
import { bytesToHex, hexToBytes } from "../../../protocol/hex.ts";
import { SecureStreamReader, SecureStreamWriter } from "../../../protocol/secure_stream.ts";
import type { Config } from "../../../server/config/mod.ts";
import type { ServerHandle } from "../../../server/server.ts";

export interface ClientOptions {
  transport?: "tcp" | "tls" | "http" | "https";
  hostname?: string;
  port: number;
  /** PEM of a CA to trust (TLS / HTTPS). */
  caCert?: string;
  pattern?: "XK" | "IK";
  versions?: number[];
  deviceId: string;
  keypair?: Keypair;
  serverStatic: Uint8Array;
  prologue?: string;
  user?: Record<string, string>;
  /** Claim this key in HELLO.client_static instead of the real one. */
  claimStatic?: Uint8Array;
  /** ACK MSG / KEY_UPDATE / GROUP_EVENT frames as they arrive (default true). */
  autoAck?: boolean;
  /** Receives every post-handshake frame instead of the `received` list (benchmarks). */
  sink?: (frame: Frame) => void;
  /** HELLO `capabilities` (e.g. ["sender"], ccp1.md §4.2). */
  capabilities?: string[];
  /** More HELLO fields (e.g. `pairing_code`). */
  hello?: Record<string, unknown>;
}

/** The server refused the handshake with this ERROR. */
export class HandshakeRefused extends Error {
  constructor(readonly problem: Record<string, unknown>) {
    super(`handshake refused: ${problem.title} (${problem.status})`);
  }
}

/** Expects the handshake to be refused, fatally, with this title and status. */
export async function expectRefused(
  options: ClientOptions,
  title: string,
  status: number,
): Promise<void> {
  await assert.rejects(TestClient.connect(options), (err: unknown) => {
    assert.ok(err instanceof HandshakeRefused, `expected a refusal, got ${err}`);
    assert.equal(err.problem.title, title);
    assert.equal(err.problem.status, status);
    assert.equal(err.problem.fatal, true);
    return true;
  });
}

/** A raw duplex byte stream to the server. */
export interface RawStream {
  read(): Promise<Uint8Array | null>;
  write(bytes: Uint8Array): Promise<void>;
  close(): void;
  /** Ends the sending side only (TCP). */
  closeWrite?(): Promise<void>;
}

/** Opens a raw byte stream (no CCP-1 logic). */
export async function openRaw(
  options: Pick<ClientOptions, "transport" | "hostname" | "port" | "caCert">,
): Promise<RawStream> {
  const hostname = options.hostname ?? "127.0.0.1";
  const kind = options.transport ?? "tcp";
  if (kind === "tcp" || kind === "tls") {
    const conn = kind === "tls"
      ? await Deno.connectTls({
        hostname: options.hostname ?? "localhost",
        port: options.port,
        caCerts: options.caCert ? [options.caCert] : undefined,
      })
      : await Deno.connect({ hostname, port: options.port });
    let closed = false;
    let size = 2048; // small while idle, large while busy (benchmarks hold thousands)
    return {
      async read() {
        const buf = new Uint8Array(size);
        try {
          const n = await conn.read(buf);
          if (n !== null) size = n === size ? 65536 : n < 2048 ? 2048 : size;
          return n === null ? null : buf.subarray(0, n);
        } catch {
          return null;
        }
      },
      async write(bytes) {
        let off = 0;
        while (off < bytes.length) off += await conn.write(bytes.subarray(off));
      },
      async closeWrite() {
        await conn.closeWrite().catch(() => {});
      },
      close() {
        if (closed) return;
        closed = true;
        try {
          conn.close();
        } catch {
          // already closed
        }
      },
    };
  }
  const scheme = kind === "https" ? "https" : "http";
  const host = kind === "https" ? (options.hostname ?? "localhost") : hostname;
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({ start: (c) => (controller = c) });
  // A client of its own: its pooled connection closes with the stream (no leak across tests).
  const client = Deno.createHttpClient(options.caCert ? { caCerts: [options.caCert] } : {});
  const response = await fetch(`${scheme}://${host}:${options.port}/connect`, {
    method: "POST",
    body,
    // @ts-ignore: duplex is needed for a streaming request body
    duplex: "half",
    client,
  });
  const reader = response.body!.getReader();
  let closed = false;
  return {
    async read() {
      try {
        const { value, done } = await reader.read();
        return done ? null : value;
      } catch {
        return null;
      }
    },
    write(bytes) {
      controller.enqueue(bytes.slice());
      return Promise.resolve();
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        controller.close();
      } catch {
        // already closed
      }
      reader.cancel().catch(() => {});
      client.close();
    },
  };
}

const ACKED_TYPES = new Set<number>([FrameType.Msg, FrameType.KeyUpdate, FrameType.GroupEvent]);

/** A handshaken CCP-1 session. */
export class TestClient {
  readonly received: Frame[] = [];
  session = "";
  version = 0;
  user: Record<string, unknown> = {};
  /** The capabilities AUTH granted. */
  granted: string[] = [];
  #seq = 0;
  #decoder = new FrameDecoder();
  #chunks: Uint8Array[] | null = [];
  #reader: SecureStreamReader | null = null;
  #writer: SecureStreamWriter | null = null;
  #pendingRecv: SecureStreamReader | null = null;
  #waiters: (() => void)[] = [];
  #ended = false;
  #loop: Promise<void>;
  #writeChain: Promise<void> = Promise.resolve();
  #handshake = Promise.withResolvers<void>();
  #phase: "auth" | "ack" | "open" = "auth";
  #noise: HandshakeState;
  readonly keypair: Keypair;
  readonly autoAck: boolean;

  private constructor(readonly raw: RawStream, readonly options: ClientOptions) {
    this.keypair = options.keypair ?? deviceKeypair(options.deviceId);
    this.autoAck = options.autoAck ?? true;
    this.#noise = new HandshakeState({
      pattern: options.pattern ?? "XK",
      initiator: true,
      prologue: new TextEncoder().encode(options.prologue ?? "commucat"),
      s: this.keypair,
      rs: options.serverStatic,
    });
    this.#loop = this.#readLoop();
    this.#handshake.promise.catch(() => {});
  }

  /** Connects and completes the handshake; throws HandshakeRefused on an ERROR. */
  static async connect(options: ClientOptions): Promise<TestClient> {
    const raw = await openRaw(options);
    const client = new TestClient(raw, options);
    try {
      await client.#start();
      return client;
    } catch (err) {
      await client.close();
      throw err;
    }
  }

  async #start(): Promise<void> {
    const msg1 = this.#noise.writeMessage(new Uint8Array(0));
    const hello: Record<string, unknown> = {
      pattern: this.options.pattern ?? "XK",
      device_id: this.options.deviceId,
      client_static: bytesToHex(this.options.claimStatic ?? this.keypair.publicKey),
      handshake: bytesToHex(msg1),
      supported_versions: this.options.versions ?? [1, 2],
    };
    if (this.options.user) hello.user = this.options.user;
    if (this.options.capabilities) hello.capabilities = this.options.capabilities;
    Object.assign(hello, this.options.hello);
    this.sendRaw(encodeControl(FrameType.Hello, 0, this.nextSeq(), hello));
    await withTimeout(this.#handshake.promise, 10_000, "handshake");
  }

  nextSeq(): number {
    return ++this.#seq;
  }

  /** Writes bytes as they are (inside the secure stream once it is up). */
  sendRaw(bytes: Uint8Array): Promise<void> {
    const out = this.#writer ? this.#writer.seal(bytes) : bytes;
    this.#writeChain = this.#writeChain.then(() => this.raw.write(out)).catch(() => {});
    return this.#writeChain;
  }

  /** Sends a control frame; returns its sequence. */
  control(type: number, channel: number, value: unknown): number {
    const seq = this.nextSeq();
    this.sendRaw(encodeControl(type as FrameType, channel, seq, value));
    return seq;
  }

  /** Sends an opaque frame (MSG, KEY_UPDATE); returns its sequence. */
  opaque(type: number, channel: number, payload: Uint8Array): number {
    const seq = this.nextSeq();
    this.sendRaw(encodeFrame({ type: type as FrameType, channel, sequence: seq, payload }));
    return seq;
  }

  msg(channel: number, text: string): number {
    return this.opaque(FrameType.Msg, channel, new TextEncoder().encode(text));
  }

  ack(sequence: number): void {
    this.control(FrameType.Ack, 0, { ack: sequence });
  }

  /** Sends JOIN and waits for its ACK (or ERROR). */
  async join(
    channel: number,
    members: string[],
    extra: Record<string, unknown> = {},
  ): Promise<Frame> {
    const seq = this.control(FrameType.Join, channel, { members, relay: true, ...extra });
    return await this.reply(seq);
  }

  /** The ACK or ERROR answering our frame `seq`. */
  async reply(seq: number, timeoutMs = 5000): Promise<Frame> {
    return await this.next(
      (f) =>
        (f.type === FrameType.Ack && (f.json as { ack?: number }).ack === seq) ||
        (f.type === FrameType.Error && (f.json as { sequence?: number }).sequence === seq),
      timeoutMs,
    );
  }

  /** Waits for (and removes) the first received frame matching `match`. */
  async next(match: (f: Frame) => boolean = () => true, timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const index = this.received.findIndex(match);
      if (index >= 0) return this.received.splice(index, 1)[0];
      if (this.#ended) throw new Error("connection ended before the expected frame");
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `timed out; received: ${
            this.received.map((f) => `${f.type}:${JSON.stringify(f.json ?? null)}`).join(", ")
          }`,
        );
      }
      const waiter = Promise.withResolvers<void>();
      this.#waiters.push(waiter.resolve);
      await withTimeout(waiter.promise, left, "frame").catch(() => {});
    }
  }

  /** Waits for a frame of `type` (MSG by default). */
  nextOfType(type: number = FrameType.Msg, timeoutMs = 5000): Promise<Frame> {
    return this.next((f) => f.type === type, timeoutMs);
  }

  /** Resolves when the server closed the connection. */
  async ended(timeoutMs = 5000): Promise<void> {
    await withTimeout(this.#loop, timeoutMs, "connection end");
  }

  get isEnded(): boolean {
    return this.#ended;
  }

  async close(): Promise<void> {
    this.raw.close();
    await this.#loop;
  }

  async #readLoop(): Promise<void> {
    try {
      while (true) {
        const chunk = await this.raw.read();
        if (chunk === null) break;
        if (this.#reader) {
          for (const piece of this.#reader.push(chunk)) this.#decoder.push(piece);
        } else {
          this.#chunks?.push(chunk);
          this.#decoder.push(chunk);
        }
        let frame: Frame | null;
        while ((frame = this.#decoder.next()) !== null) {
          this.#onFrame(frame);
          if (this.#pendingRecv) this.#switch();
        }
      }
    } catch (err) {
      this.#handshake.reject(err);
    } finally {
      this.#ended = true;
      this.raw.close();
      this.#handshake.reject(new Error("connection closed during the handshake"));
      this.#wake();
    }
  }

  #switch(): void {
    const buffered = this.#decoder.buffered;
    const all = concatChunks(this.#chunks ?? []);
    const rest = all.subarray(all.length - buffered);
    this.#chunks = null;
    this.#decoder = new FrameDecoder();
    this.#reader = this.#pendingRecv;
    this.#pendingRecv = null;
    for (const piece of this.#reader!.push(rest)) this.#decoder.push(piece);
  }

  #onFrame(frame: Frame): void {
    const json = (frame.json ?? {}) as Record<string, unknown>;
    if (this.#phase !== "open" && frame.type === FrameType.Error) {
      this.#handshake.reject(new HandshakeRefused(json));
      this.received.push(frame);
      this.#wake();
      return;
    }
    if (this.#phase === "auth") {
      if (frame.type !== FrameType.Auth) throw new Error(`expected AUTH, got ${frame.type}`);
      this.#noise.readMessage(hexToBytes(json.handshake as string));
      this.version = json.protocol_version as number;
      this.session = json.session as string;
      this.granted = Array.isArray(json.capabilities) ? json.capabilities as string[] : [];
      if ((this.options.pattern ?? "XK") === "XK") {
        const msg3 = this.#noise.writeMessage(new Uint8Array(0));
        this.sendRaw(
          encodeControl(FrameType.Auth, 0, this.nextSeq(), { handshake: bytesToHex(msg3) }),
        );
      }
      const { send, recv } = this.#noise.split();
      if (this.version === 2) {
        this.#writer = new SecureStreamWriter(send);
        this.#pendingRecv = new SecureStreamReader(recv);
      } else {
        this.#chunks = null;
      }
      this.#phase = "ack";
      return;
    }
    if (this.#phase === "ack") {
      if (frame.type !== FrameType.Ack || json.handshake !== "ok") {
        throw new Error(`expected the completion ACK, got ${frame.type}`);
      }
      this.user = json.user as Record<string, unknown>;
      this.#phase = "open";
      this.#handshake.resolve();
      return;
    }
    if (this.options.sink) {
      this.options.sink(frame);
      return;
    }
    if (this.autoAck && ACKED_TYPES.has(frame.type)) this.ack(frame.sequence);
    this.received.push(frame);
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

/** Rejects when `promise` takes longer than `ms` (and always clears its timer). */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let id: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((
        _,
        reject,
      ) => (id = setTimeout(() => reject(new Error(`${what} timed out`)), ms))),
    ]);
  } finally {
    clearTimeout(id);
  }
}

/** Reads raw bytes until the stream ends (or `timeoutMs` passes); returns every frame decoded. */
export async function readFrames(raw: RawStream, timeoutMs = 5000): Promise<Frame[]> {
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  const loop = (async () => {
    while (true) {
      const chunk = await raw.read();
      if (chunk === null) return;
      decoder.push(chunk);
      let f: Frame | null;
      while ((f = decoder.next()) !== null) frames.push(f);
    }
  })();
  await withTimeout(loop, timeoutMs, "stream end");
  return frames;
}

/** One key pair per device id in this process: a device reconnects with its own key, as a real
 * device does (a new key for a known device is a rotation, which only its owner may ask for). */
const deviceKeys = new Map<string, Keypair>();

/** The key pair a test device uses unless its options name another. */
export function deviceKeypair(deviceId: string): Keypair {
  let keypair = deviceKeys.get(deviceId);
  if (keypair === undefined) deviceKeys.set(deviceId, keypair = generateKeypair());
  return keypair;
}

/** Client options for a device of the server started with `config`, its handle its id. */
export function clientOptions(
  server: ServerHandle,
  config: Config,
  deviceId: string,
  extra: Partial<ClientOptions> = {},
): ClientOptions {
  return {
    port: server.ports.tcp,
    serverStatic: config.crypto.noisePublic,
    deviceId,
    user: { handle: deviceId },
    ...extra,
  };
}

/**
 * Completes an XK handshake under protocol v1 (allowed on loopback) over a plain TCP socket,
 * then hands the socket back: the caller never reads it again (a reader that stalls).
 */
export async function silentClient(
  port: number,
  serverStatic: Uint8Array,
  deviceId: string,
  keypair: Keypair,
): Promise<Deno.Conn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const noise = new HandshakeState({
    pattern: "XK",
    initiator: true,
    prologue: new TextEncoder().encode("commucat"),
    s: keypair,
    rs: serverStatic,
  });
  const write = async (bytes: Uint8Array) => {
    let off = 0;
    while (off < bytes.length) off += await conn.write(bytes.subarray(off));
  };
  const decoder = new FrameDecoder();
  const buf = new Uint8Array(65536);
  const nextFrame = async (): Promise<Frame> => {
    for (;;) {
      const frame = decoder.next();
      if (frame) return frame;
      const n = await conn.read(buf);
      if (n === null) throw new Error("server closed during the handshake");
      decoder.push(buf.slice(0, n));
    }
  };
  await write(encodeControl(FrameType.Hello, 0, 1, {
    pattern: "XK",
    device_id: deviceId,
    client_static: bytesToHex(keypair.publicKey),
    handshake: bytesToHex(noise.writeMessage(new Uint8Array(0))),
    supported_versions: [1],
    user: { handle: deviceId },
  }));
  const auth = await nextFrame();
  assert.equal(auth.type, FrameType.Auth, JSON.stringify(auth.json));
  noise.readMessage(hexToBytes((auth.json as { handshake: string }).handshake));
  await write(encodeControl(FrameType.Auth, 0, 2, {
    handshake: bytesToHex(noise.writeMessage(new Uint8Array(0))),
  }));
  const ok = await nextFrame();
  assert.equal(ok.type, FrameType.Ack, JSON.stringify(ok.json));
  assert.equal((ok.json as { handshake?: string }).handshake, "ok", JSON.stringify(ok.json));
  return conn;
}

/**
 * A `connect(id, extra)` for devices of the server started with `config`: each client is added
 * to `clients` (for the caller's clean-up); `defaults` go into every client's options.
 */
export function connector(
  server: ServerHandle,
  config: Config,
  clients: TestClient[],
  defaults: Partial<ClientOptions> = {},
): (id: string, extra?: Partial<ClientOptions>) => Promise<TestClient> {
  return async (id, extra = {}) => {
    const c = await TestClient.connect(
      clientOptions(server, config, id, { ...defaults, ...extra }),
    );
    clients.push(c);
    return c;
  };
}
