/**
 * A scripted CCP-1 responder for SDK tests: just enough of the server (Noise XK/IK
 * responder, version choice, v2 secure stream) to drive the client, with hooks to refuse
 * the handshake and to answer frames however a test needs.
 */

import { type Frame, FrameType } from "../../protocol/frame.ts";
import { encodeControl, encodeFrame, errorFrame } from "../../protocol/frame.ts";
import { generateKeypair, type Keypair } from "../../protocol/crypto.ts";
import { bytesToHex, hexToBytes } from "../../protocol/hex.ts";
import { HandshakeState } from "../../protocol/noise.ts";
import type { Problem } from "../../protocol/errors.ts";
import { FrameReader, FrameWriter } from "../../client/framing.ts";
import type { Transport } from "../../client/transport.ts";
import { ConnTransport } from "../../server/transport.ts";

const encoder = new TextEncoder();

/** How the fake server behaves. */
export interface FakeServerOptions {
  /** Versions the server supports (default [1, 2]). */
  versions?: number[];
  prologue?: string;
  /** Answer HELLO with this ERROR instead of AUTH. */
  refuseHello?: Problem;
  /** Answer after the client's key is proven (XK: after msg3) with this ERROR. */
  refuseAfterProof?: Problem;
  /** Send that refusal in plaintext even under v2 (some servers do). */
  refusePlaintext?: boolean;
  /** Never answer HELLO (handshake timeout tests). */
  silent?: boolean;
  /** Split every server write into pieces of this many bytes (1 = byte by byte). */
  chunkSize?: number;
  /** Called for each frame after the handshake; default: ACK every non-ACK frame. */
  onFrame?: (conn: FakeConnection, frame: Frame) => void;
  /** Capabilities AUTH grants (default none). */
  grant?: string[];
  /** Frames to send right after the completion ACK (e.g. a replayed queue). */
  replay?: (conn: FakeConnection) => void;
}

/** One accepted connection after its handshake. */
export class FakeConnection {
  /** Frames received after the handshake, in order. */
  readonly received: Frame[] = [];
  #nextSequence: number;
  #waiters: (() => void)[] = [];

  constructor(
    readonly deviceId: string,
    readonly version: number,
    readonly clientStatic: Uint8Array,
    readonly hello: Record<string, unknown>,
    readonly writer: FrameWriter,
    readonly transport: Transport,
    firstSequence: number,
  ) {
    this.#nextSequence = firstSequence;
  }

  /** Sends a control frame with the server's next sequence; returns that sequence. */
  control(type: FrameType, channel: number, value: unknown): number {
    const seq = this.#nextSequence++;
    this.writer.enqueue(encodeControl(type, channel, seq, value));
    return seq;
  }

  /** Sends an opaque frame (MSG / KEY_UPDATE); returns its sequence. */
  opaque(type: FrameType, channel: number, payload: Uint8Array): number {
    const seq = this.#nextSequence++;
    this.writer.enqueue(encodeFrame({ type, channel, sequence: seq, payload }));
    return seq;
  }

  /** Sends an ERROR. */
  error(problem: Problem): void {
    const seq = this.#nextSequence++;
    this.writer.enqueue(errorFrame(problem, 0, seq));
  }

  /** Records a received frame. */
  record(frame: Frame): void {
    this.received.push(frame);
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Waits until `count` frames (optionally of `type`) have arrived; returns them. */
  async waitFor(count: number, type?: FrameType): Promise<Frame[]> {
    for (;;) {
      const frames = type === undefined
        ? this.received
        : this.received.filter((f) => f.type === type);
      if (frames.length >= count) return frames;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  close(): void {
    this.transport.close();
  }
}

/** A listening fake server. Close it with {@link close}. */
export class FakeServer {
  readonly keypair: Keypair = generateKeypair();
  readonly connections: FakeConnection[] = [];
  readonly #listener: Deno.TcpListener;
  readonly #options: FakeServerOptions;
  readonly #tasks = new Set<Promise<void>>();
  readonly #transports = new Set<Transport>();
  #connWaiters: (() => void)[] = [];

  private constructor(listener: Deno.TcpListener, options: FakeServerOptions) {
    this.#listener = listener;
    this.#options = options;
  }

  /** Starts listening on 127.0.0.1, port 0. */
  static start(options: FakeServerOptions = {}): FakeServer {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const server = new FakeServer(listener, options);
    server.#track(server.#accept());
    return server;
  }

  get port(): number {
    return (this.#listener.addr as Deno.NetAddr).port;
  }

  get publicKeyHex(): string {
    return bytesToHex(this.keypair.publicKey);
  }

  /** Resolves with the n-th (0-based) connection once its handshake completed. */
  async connection(index = 0): Promise<FakeConnection> {
    while (this.connections.length <= index) {
      await new Promise<void>((resolve) => this.#connWaiters.push(resolve));
    }
    return this.connections[index];
  }

  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    for (const t of this.#transports) t.close();
    while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
  }

  #track(task: Promise<void>): void {
    this.#tasks.add(task);
    task.catch(() => {}).finally(() => this.#tasks.delete(task));
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return;
      }
      const transport = new ChunkingTransport(conn, this.#options.chunkSize);
      this.#transports.add(transport);
      this.#track(
        this.#serve(transport).catch(() => {}).finally(() => {
          transport.close();
          this.#transports.delete(transport);
        }),
      );
    }
  }

  async #serve(transport: Transport): Promise<void> {
    const o = this.#options;
    const reader = new FrameReader(transport);
    const helloFrame = await reader.nextHandshakeFrame();
    if (helloFrame === null || o.silent) {
      if (o.silent) await reader.nextHandshakeFrame(); // hold until the client gives up
      return;
    }
    const hello = helloFrame.json as Record<string, unknown>;
    if (o.refuseHello) {
      await transport.write(errorFrame({ ...o.refuseHello, sequence: 1 }, 0, 1));
      return;
    }
    const offered = (hello.supported_versions as number[]) ?? [1];
    const supported = o.versions ?? [1, 2];
    const version = Math.max(...offered.filter((v) => supported.includes(v)));
    if (!Number.isFinite(version)) {
      await transport.write(
        errorFrame(
          {
            type: "about:blank",
            title: "Protocol Version Mismatch",
            status: 426,
            detail: "no common version",
            fatal: true,
          },
          0,
          1,
        ),
      );
      return;
    }
    const pattern = hello.pattern as "XK" | "IK";
    const noise = new HandshakeState({
      pattern,
      initiator: false,
      prologue: encoder.encode(o.prologue ?? "commucat"),
      s: this.keypair,
    });
    noise.readMessage(hexToBytes(hello.handshake as string));
    const session = crypto.randomUUID();
    const user = { id: "u-1", handle: "alice", display_name: null, avatar_url: null };
    const msg2 = noise.writeMessage(
      encoder.encode(JSON.stringify({ session, domain: "test.local", protocol_version: version })),
    );
    await transport.write(
      encodeControl(FrameType.Auth, 0, 1, {
        session,
        handshake: bytesToHex(msg2),
        server_static: this.publicKeyHex,
        protocol_version: version,
        supported_versions: supported,
        user,
        capabilities: this.#options.grant ?? [],
      }),
    );
    let serverSeq = 2;
    if (pattern === "XK") {
      const auth = await reader.nextHandshakeFrame();
      if (auth === null || auth.type !== FrameType.Auth) return;
      noise.readMessage(hexToBytes((auth.json as { handshake: string }).handshake));
    }
    const proven = noise.remoteStatic!;
    if (bytesToHex(proven) !== hello.client_static) throw new Error("static key mismatch");
    const { send, recv } = noise.split();
    const secure = version >= 2;
    if (o.refuseAfterProof) {
      const frame = errorFrame(o.refuseAfterProof, 0, serverSeq);
      if (secure && !o.refusePlaintext) {
        const w = new FrameWriter(transport, send, () => {});
        w.enqueue(frame);
        await w.flushed();
      } else {
        await transport.write(frame);
      }
      return;
    }
    reader.startStream(secure ? recv : null);
    const writer = new FrameWriter(transport, secure ? send : null, () => transport.close());
    writer.enqueue(
      encodeControl(FrameType.Ack, 0, serverSeq++, { handshake: "ok", session, user }),
    );
    const conn = new FakeConnection(
      hello.device_id as string,
      version,
      proven,
      hello,
      writer,
      transport,
      serverSeq,
    );
    this.connections.push(conn);
    for (const wake of this.#connWaiters.splice(0)) wake();
    o.replay?.(conn);
    for (;;) {
      const frame = await reader.next();
      if (frame === null) break;
      conn.record(frame);
      if (o.onFrame) o.onFrame(conn, frame);
      else if (frame.type !== FrameType.Ack) {
        conn.control(FrameType.Ack, frame.channel, { ack: frame.sequence });
      }
    }
    await writer.flushed();
  }
}

/**
 * The relay's own TCP transport (server/transport.ts: its read loop and buffers), seen through
 * the client's Transport interface, with writes split into `chunkSize` pieces when given (odd
 * chunk boundaries).
 */
class ChunkingTransport extends ConnTransport implements Transport {
  readonly tls = false;
  readonly loopback = true;
  constructor(conn: Deno.TcpConn, readonly chunkSize?: number) {
    super(conn, false);
  }

  override async write(bytes: Uint8Array): Promise<void> {
    const step = this.chunkSize ?? bytes.length;
    for (let offset = 0; offset < bytes.length; offset += step) {
      await super.write(bytes.subarray(offset, Math.min(offset + step, bytes.length)));
    }
  }
}
