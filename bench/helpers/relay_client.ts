/**
 * A lean CCP-1 client for the relay benchmark (not a benchmark itself): XK handshake, v1 or v2,
 * then a frame scanner that hands each frame's fields to callbacks without building objects and
 * reads the server's per-frame `ACK {"ack":n}` without a JSON parser (any other control payload
 * is parsed as JSON). It does all the work a real client must do — decrypt, decode, check each
 * ACK, acknowledge each MSG — only without the test client's bookkeeping.
 */
import { encodeControl, FrameType } from "../../protocol/frame.ts";
import { HandshakeState } from "../../protocol/noise.ts";
import { generateKeypair } from "../../protocol/crypto.ts";
import { bytesToHex, hexToBytes } from "../../protocol/hex.ts";
import { SecureStreamReader, SecureStreamWriter } from "../../protocol/secure_stream.ts";

/** Options of {@link BenchClient.connect}. */
export interface BenchClientOptions {
  port: number;
  serverStatic: Uint8Array;
  deviceId: string;
  version: 1 | 2;
  /** A routed frame (MSG …) arrived under the server's `sequence`. */
  onFrame?: (type: number, channel: number, sequence: number, payload: Uint8Array) => void;
  /** The server acknowledged our frame `acked` with `ACK {"ack": acked}`. */
  onAck?: (acked: number) => void;
  /** Any other control frame after the handshake (ERROR, ACK with more fields …). */
  onControl?: (type: number, json: Record<string, unknown>) => void;
  /** Called after each batch of bytes read has been handled (e.g. to send batched acks). */
  onBatch?: () => void;
}

const utf8 = new TextDecoder();
const ACK_PREFIX = [0x7b, 0x22, 0x61, 0x63, 0x6b, 0x22, 0x3a]; // {"ack":

/** `{"ack":<digits>}` → the number; -1 for any other payload. */
export function fastAck(p: Uint8Array): number {
  const end = p.length - 1;
  if (end < 8 || p[end] !== 0x7d) return -1;
  for (let i = 0; i < 7; i++) if (p[i] !== ACK_PREFIX[i]) return -1;
  let n = 0;
  for (let i = 7; i < end; i++) {
    const d = p[i] - 48;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/** One benchmark client connection. */
export class BenchClient {
  #conn: Deno.Conn;
  #seq = 0;
  #rest: Uint8Array | null = null;
  #reader: SecureStreamReader | null = null;
  #writer: SecureStreamWriter | null = null;
  #writes: Promise<void> = Promise.resolve();
  #phase: "auth" | "ack" | "open" = "auth";
  #noise: HandshakeState;
  #keypair = generateKeypair();
  #handshake = Promise.withResolvers<void>();
  #switchTo: SecureStreamReader | null = null;
  #loop: Promise<void>;

  private constructor(conn: Deno.Conn, readonly options: BenchClientOptions) {
    this.#conn = conn;
    this.#noise = new HandshakeState({
      pattern: "XK",
      initiator: true,
      prologue: new TextEncoder().encode("commucat"),
      s: this.#keypair,
      rs: options.serverStatic,
    });
    this.#handshake.promise.catch(() => {});
    this.#loop = this.#readLoop();
  }

  /** Connects and completes the XK handshake. */
  static async connect(options: BenchClientOptions): Promise<BenchClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: options.port });
    conn.setNoDelay(true);
    const client = new BenchClient(conn, options);
    const msg1 = client.#noise.writeMessage(new Uint8Array(0));
    client.send(encodeControl(FrameType.Hello, 0, client.nextSeq(), {
      pattern: "XK",
      device_id: options.deviceId,
      client_static: bytesToHex(client.#keypair.publicKey),
      handshake: bytesToHex(msg1),
      supported_versions: [options.version],
      user: { handle: options.deviceId },
    }));
    try {
      await client.#handshake.promise;
    } catch (err) {
      await client.close();
      throw err;
    }
    return client;
  }

  nextSeq(): number {
    return ++this.#seq;
  }

  /** Writes encoded frames (sealed under v2), in order. */
  send(bytes: Uint8Array): void {
    const out = this.#writer ? this.#writer.seal(bytes) : bytes;
    this.#writes = this.#writes.then(async () => {
      let off = 0;
      while (off < out.length) off += await this.#conn.write(out.subarray(off));
    }).catch(() => {});
  }

  /** Sends a control frame; returns its sequence. */
  control(type: number, channel: number, value: unknown): number {
    const seq = this.nextSeq();
    this.send(encodeControl(type as FrameType, channel, seq, value));
    return seq;
  }

  async close(): Promise<void> {
    await this.#writes;
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
    await this.#loop;
  }

  async #readLoop(): Promise<void> {
    try {
      while (true) {
        const buf = new Uint8Array(65536);
        const n = await this.#conn.read(buf).catch(() => null);
        if (n === null) break;
        const chunk = buf.subarray(0, n);
        if (this.#reader) {
          for (const piece of this.#reader.push(chunk)) this.#scan(piece);
        } else {
          this.#scan(chunk);
        }
        this.options.onBatch?.();
      }
    } catch (err) {
      this.#handshake.reject(err);
    } finally {
      this.#handshake.reject(new Error("connection closed during the handshake"));
    }
  }

  /** Decodes every complete frame in `bytes` (after what was left from the last call). */
  #scan(input: Uint8Array): void {
    let bytes = input;
    if (this.#rest !== null) {
      bytes = new Uint8Array(this.#rest.length + input.length);
      bytes.set(this.#rest);
      bytes.set(input, this.#rest.length);
      this.#rest = null;
    }
    const end = bytes.length;
    let pos = 0;
    while (pos < end) {
      // frame_len
      let len = 0;
      let shift = 1;
      let p = pos;
      let complete = false;
      while (p < end) {
        const b = bytes[p++];
        len += (b & 0x7f) * shift;
        shift *= 128;
        if (b < 0x80) {
          complete = true;
          break;
        }
      }
      if (!complete || end - p < len) break;
      const bodyEnd = p + len;
      const type = bytes[p++];
      let channel = 0;
      shift = 1;
      for (let b = 0x80; b >= 0x80; shift *= 128) channel += ((b = bytes[p++]) & 0x7f) * shift;
      let sequence = 0;
      shift = 1;
      for (let b = 0x80; b >= 0x80; shift *= 128) sequence += ((b = bytes[p++]) & 0x7f) * shift;
      let plen = 0;
      shift = 1;
      for (let b = 0x80; b >= 0x80; shift *= 128) plen += ((b = bytes[p++]) & 0x7f) * shift;
      if (p + plen !== bodyEnd) throw new Error("malformed frame from the server");
      pos = bodyEnd;
      this.#onFrame(type, channel, sequence, bytes.subarray(p, bodyEnd));
      if (this.#switchTo) {
        // The rest of the stream is the v2 secure stream.
        this.#reader = this.#switchTo;
        this.#switchTo = null;
        const rest = bytes.slice(pos);
        for (const piece of this.#reader.push(rest)) this.#scan(piece);
        return;
      }
    }
    if (pos < end) this.#rest = bytes.slice(pos);
  }

  #onFrame(type: number, channel: number, sequence: number, payload: Uint8Array): void {
    if (this.#phase === "open") {
      if (type === FrameType.Msg || type === FrameType.KeyUpdate) {
        this.options.onFrame?.(type, channel, sequence, payload);
        return;
      }
      if (type === FrameType.Ack) {
        const acked = fastAck(payload);
        if (acked >= 0) {
          this.options.onAck?.(acked);
          return;
        }
      }
      this.options.onControl?.(type, JSON.parse(utf8.decode(payload)));
      return;
    }
    const json = JSON.parse(utf8.decode(payload)) as Record<string, unknown>;
    if (type === FrameType.Error) {
      throw new Error(`handshake refused: ${JSON.stringify(json)}`);
    }
    if (this.#phase === "auth") {
      this.#noise.readMessage(hexToBytes(json.handshake as string));
      const msg3 = this.#noise.writeMessage(new Uint8Array(0));
      this.send(
        encodeControl(FrameType.Auth, 0, this.nextSeq(), { handshake: bytesToHex(msg3) }),
      );
      const { send, recv } = this.#noise.split();
      if (json.protocol_version === 2) {
        this.#writer = new SecureStreamWriter(send);
        this.#switchTo = new SecureStreamReader(recv);
      }
      this.#phase = "ack";
      return;
    }
    if (type !== FrameType.Ack || json.handshake !== "ok") {
      throw new Error(`expected the completion ACK, got frame type ${type}`);
    }
    this.#phase = "open";
    this.#handshake.resolve();
  }
}
