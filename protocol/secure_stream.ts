/**
 * The CCP-1 v2 secure stream (ccp1.md §3): after the handshake, each direction of the byte
 * stream is a sequence of chunks `u16 big-endian length ‖ ciphertext`, each ciphertext a Noise
 * transport message (ChaCha20-Poly1305 with the split CipherState, empty associated data,
 * ≤ 65535 octets, so ≤ 65519 plaintext octets). The plaintexts concatenate into the CCP-1 frame
 * stream; chunk boundaries carry no meaning.
 *
 * Empty chunks: a writer never emits a chunk without plaintext (sealing an empty buffer returns
 * an empty buffer and uses no nonce), and a reader rejects a chunk length below 17 (0 to 16
 * octets cannot carry plaintext), so every chunk moves at least one byte.
 *
 * @module
 */
import { type CipherState, MAX_MESSAGE_LENGTH, MAX_PLAINTEXT_LENGTH, NoiseError } from "./noise.ts";
import { TAGLEN } from "./crypto.ts";

/** Octets of the length prefix. */
export const CHUNK_HEADER_LENGTH = 2;
/** Largest ciphertext in one chunk. */
export const MAX_CHUNK_CIPHERTEXT = MAX_MESSAGE_LENGTH;
/** Largest plaintext in one chunk. */
export const MAX_CHUNK_PLAINTEXT = MAX_PLAINTEXT_LENGTH;
/** Smallest valid chunk ciphertext: one plaintext octet plus the tag. */
export const MIN_CHUNK_CIPHERTEXT = TAGLEN + 1;

const EMPTY = new Uint8Array(0);

/** The size of `seal(plaintext)` for a plaintext of `length` octets (with the default chunk size). */
export function sealedLength(length: number, maxPlaintext = MAX_CHUNK_PLAINTEXT): number {
  const chunks = Math.ceil(length / maxPlaintext);
  return length + chunks * (CHUNK_HEADER_LENGTH + TAGLEN);
}

/** Encrypts one direction of the stream. */
export class SecureStreamWriter {
  readonly #cs: CipherState;
  readonly #maxPlaintext: number;
  #failed: Error | null = null;

  /**
   * @param cs the sending CipherState from `HandshakeState.split().send`
   * @param options.maxPlaintext plaintext octets per chunk (1..65519; default 65519)
   */
  constructor(cs: CipherState, options: { maxPlaintext?: number } = {}) {
    if (!cs.hasKey()) throw new NoiseError("state", "secure stream needs a keyed CipherState");
    const max = options.maxPlaintext ?? MAX_CHUNK_PLAINTEXT;
    if (!Number.isInteger(max) || max < 1 || max > MAX_CHUNK_PLAINTEXT) {
      throw new RangeError(`maxPlaintext must be an integer in 1..${MAX_CHUNK_PLAINTEXT}`);
    }
    this.#cs = cs;
    this.#maxPlaintext = max;
  }

  /**
   * Encrypts `plaintext` as one or more chunks and returns them concatenated in one buffer (one
   * allocation, ready for a single socket write). An empty plaintext gives an empty buffer.
   * Throws NoiseError("nonce") when the nonce is exhausted; the writer is then unusable.
   */
  seal(plaintext: Uint8Array): Uint8Array {
    if (this.#failed) {
      throw new NoiseError("state", `secure stream writer failed earlier: ${this.#failed.message}`);
    }
    const length = plaintext.length;
    if (length === 0) return EMPTY;
    const max = this.#maxPlaintext;
    const out = new Uint8Array(sealedLength(length, max));
    let off = 0;
    try {
      for (let start = 0; start < length; start += max) {
        const piece = plaintext.subarray(start, Math.min(start + max, length));
        const ctLength = piece.length + TAGLEN;
        out[off] = ctLength >>> 8;
        out[off + 1] = ctLength & 0xff;
        this.#cs.encryptWithAdInto(EMPTY, piece, out, off + CHUNK_HEADER_LENGTH);
        off += CHUNK_HEADER_LENGTH + ctLength;
      }
    } catch (err) {
      // A partly sealed buffer is never returned: the nonces used so far are gone, so the
      // stream cannot continue consistently.
      this.#failed = err as Error;
      throw err;
    }
    return out;
  }
}

/**
 * Decrypts one direction of the stream incrementally: bytes may arrive split anywhere. Any
 * error (failed decrypt — tampering, replay, reordering, truncation of a chunk — or a chunk
 * length below 17) is fatal: the reader throws it and refuses further input.
 */
export class SecureStreamReader {
  readonly #cs: CipherState;
  // A chunk in progress: its header bytes or its ciphertext, gathered across pushes.
  // (The header is gathered only when a read splits it: made then, not for every reader.)
  #header: Uint8Array | null = null;
  #headerFill = 0;
  #chunk: Uint8Array | null = null;
  #chunkFill = 0;
  #failed: Error | null = null;

  /** @param cs the receiving CipherState from `HandshakeState.split().recv` */
  constructor(cs: CipherState) {
    if (!cs.hasKey()) throw new NoiseError("state", "secure stream needs a keyed CipherState");
    this.#cs = cs;
  }

  /** Octets held for an incomplete chunk. */
  get buffered(): number {
    return this.#headerFill + this.#chunkFill;
  }

  /**
   * Feeds received bytes; returns the plaintext of every chunk completed by them (possibly
   * none). The returned arrays are new; `bytes` may be reused by the caller afterwards.
   */
  push(bytes: Uint8Array): Uint8Array[] {
    if (this.#failed) {
      throw new NoiseError("state", `secure stream reader failed earlier: ${this.#failed.message}`);
    }
    try {
      return this.#push(bytes);
    } catch (err) {
      this.#failed = err as Error;
      this.#chunk = null;
      throw err;
    }
  }

  #push(bytes: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let pos = 0;
    const end = bytes.length;
    while (pos < end) {
      if (this.#chunk === null) {
        // Fast path: a whole chunk inside `bytes` is decrypted in place, without copying.
        if (this.#headerFill === 0 && end - pos >= CHUNK_HEADER_LENGTH) {
          const len = (bytes[pos] << 8) | bytes[pos + 1];
          checkChunkLength(len);
          if (end - pos - CHUNK_HEADER_LENGTH >= len) {
            const start = pos + CHUNK_HEADER_LENGTH;
            out.push(this.#cs.decryptWithAd(EMPTY, bytes.subarray(start, start + len)));
            pos = start + len;
            continue;
          }
          this.#beginChunk(len);
          pos += CHUNK_HEADER_LENGTH;
          continue;
        }
        const header = (this.#header ??= new Uint8Array(CHUNK_HEADER_LENGTH));
        header[this.#headerFill++] = bytes[pos++];
        if (this.#headerFill === CHUNK_HEADER_LENGTH) {
          this.#headerFill = 0;
          const len = (header[0] << 8) | header[1];
          checkChunkLength(len);
          this.#beginChunk(len);
        }
        continue;
      }
      const chunk = this.#chunk;
      const take = Math.min(chunk.length - this.#chunkFill, end - pos);
      chunk.set(bytes.subarray(pos, pos + take), this.#chunkFill);
      this.#chunkFill += take;
      pos += take;
      if (this.#chunkFill === chunk.length) {
        this.#chunk = null;
        this.#chunkFill = 0;
        out.push(this.#cs.decryptWithAd(EMPTY, chunk));
      }
    }
    return out;
  }

  #beginChunk(length: number): void {
    this.#chunk = new Uint8Array(length);
    this.#chunkFill = 0;
  }
}

function checkChunkLength(length: number): void {
  // A u16 cannot exceed MAX_CHUNK_CIPHERTEXT; only the lower bound needs a check.
  if (length < MIN_CHUNK_CIPHERTEXT) {
    throw new NoiseError(
      "length",
      length === 0
        ? "secure stream chunk length is 0 (empty chunks are not allowed)"
        : `secure stream chunk length ${length} is below ${MIN_CHUNK_CIPHERTEXT} ` +
          "(a chunk must carry at least one plaintext octet and the 16-octet tag)",
    );
  }
}
