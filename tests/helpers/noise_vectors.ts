/**
 * The shared Noise test vectors (cacophony's JSON format, public domain): loading a file, and
 * the initiator and responder a vector describes, on a given crypto backend.
 */
import { hexToBytes } from "@noble/hashes/utils.js";
import { HandshakeState, type PatternName } from "../../protocol/noise.ts";
import {
  type CryptoBackend,
  defaultBackend,
  nobleBackend,
  nodeBackend,
} from "../../protocol/crypto.ts";

export interface Vector {
  protocol_name: string;
  init_prologue: string;
  init_static?: string;
  init_ephemeral: string;
  init_remote_static?: string;
  resp_prologue: string;
  resp_static?: string;
  /** Absent for the one-way patterns (the responder sends nothing). */
  resp_ephemeral?: string;
  resp_remote_static?: string;
  handshake_hash: string;
  messages: { payload: string; ciphertext: string }[];
}

/** Every crypto backend the vectors are run on. */
export const BACKENDS: CryptoBackend[] = [defaultBackend, nobleBackend, nodeBackend];

/** The vectors of a JSON vector file. */
export async function loadVectors(url: URL): Promise<Vector[]> {
  return JSON.parse(await Deno.readTextFile(url)).vectors;
}

/** Bytes of a hex string (a malformed one throws). */
export const fromHex = (hex: string): Uint8Array => hexToBytes(hex);

/** The key pair of a private key in hex, on `backend`; undefined when there is none. */
export function keypair(backend: CryptoBackend, privHex?: string) {
  if (!privHex) return undefined;
  const privateKey = fromHex(privHex);
  return { privateKey, publicKey: backend.publicKeyOf(privateKey) };
}

/** The pattern of a `Noise_<P>_25519_ChaChaPoly_BLAKE2s` vector, or undefined for any other. */
export const patternOf = (v: Vector): PatternName | undefined =>
  /^Noise_([A-Z]+)_25519_ChaChaPoly_BLAKE2s$/.exec(v.protocol_name)?.[1] as
    | PatternName
    | undefined;

/** The initiator and the responder of vector `v` on `backend`, with its keys and prologues. */
export function handshakes(v: Vector, pattern: PatternName, backend: CryptoBackend) {
  const init = new HandshakeState({
    pattern,
    initiator: true,
    prologue: fromHex(v.init_prologue),
    s: keypair(backend, v.init_static),
    e: keypair(backend, v.init_ephemeral),
    rs: v.init_remote_static ? fromHex(v.init_remote_static) : undefined,
    backend,
  });
  const resp = new HandshakeState({
    pattern,
    initiator: false,
    prologue: fromHex(v.resp_prologue),
    s: keypair(backend, v.resp_static),
    e: keypair(backend, v.resp_ephemeral),
    rs: v.resp_remote_static ? fromHex(v.resp_remote_static) : undefined,
    backend,
  });
  return { init, resp };
}
