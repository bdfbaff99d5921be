/**
 * A `Deno.Conn` (TCP or TLS) as a byte stream: the read loop and write loop both sides use (the
 * relay's TCP and TLS transports, server/transport.ts, and the SDK's, client/transport_deno.ts).
 * Deno only.
 *
 * @module
 */

const READ_SIZE = 64 * 1024;
/**
 * The buffer an idle connection parks in its pending read: small, since every idle
 * connection holds one (a chat frame inside the v2 secure stream fits; a larger arrival
 * switches to the large buffer).
 */
const IDLE_READ_SIZE = 512;
const END: Promise<null> = Promise.resolve(null);

/** Reads, writes and closes one `Deno.Conn`. */
export class ConnStream {
  #closed = false;
  /** The large read buffer, kept while traffic is heavy (its contents are copied out). */
  #large: Uint8Array | null = null;

  constructor(protected readonly conn: Deno.Conn) {}

  /** The next bytes received (a fresh array the caller may keep), or null at end of stream. */
  read(): Promise<Uint8Array | null> {
    if (this.#closed) return END;
    // An idle connection parks a small buffer in its pending read; a read that fills it
    // switches to one large buffer until traffic calms down (memory per idle connection). What
    // is returned is always a fresh buffer of exactly the bytes read: the decoder keeps views
    // into it (payloads in flight until their ACK), so a small frame never pins a large buffer.
    // Not an async function: a pending read is what every idle connection holds, and a
    // suspended async function (its generator and registers) costs more than a `then`.
    const buf = this.#large ?? new Uint8Array(IDLE_READ_SIZE);
    return this.conn.read(buf).then((n) => this.#received(buf, n), (err) => {
      if (this.#closed) return null;
      throw err;
    });
  }

  #received(buf: Uint8Array, n: number | null): Uint8Array | null {
    if (n === null) return null;
    if (buf === this.#large) {
      if (n < IDLE_READ_SIZE) this.#large = null;
      return buf.slice(0, n);
    }
    if (n === buf.length) {
      this.#large = new Uint8Array(READ_SIZE);
      return buf;
    }
    return buf.slice(0, n);
  }

  /** Writes all of `bytes` (Deno.Conn.write may take only part of a buffer). */
  async write(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < bytes.length) {
      if (this.#closed) throw new Deno.errors.BrokenPipe("transport closed");
      offset += await this.conn.write(bytes.subarray(offset));
    }
  }

  /** Closes the connection; pending reads end with null. Safe to call more than once. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // Already closed by the peer.
    }
  }
}
