/**
 * The generated key file: with no Noise key or federation seed configured, the missing ones are
 * generated once into `<data_dir>/keys.json` (mode 0600) and read back on later starts.
 *
 * @module
 */
import { join } from "node:path";
import { randomBytes } from "@noble/hashes/utils.js";
import { generateKeypair, publicKeyOf } from "../../protocol/crypto.ts";
import { federationKeypair } from "../../protocol/federation.ts";
import { bytesToHex, hexToBytes } from "../../protocol/hex.ts";
import { ConfigError } from "./error.ts";
import { isTable } from "./parsers.ts";
import type { Config } from "./types.ts";

/** Name of the generated key file inside data_dir. */
export const KEY_FILE_NAME = "keys.json";

/** Fresh key material as hex, e.g. for printing a `[crypto]` section. */
export function generateKeys(): {
  noisePrivate: string;
  noisePublic: string;
  federationSeed: string;
} {
  const { privateKey, publicKey } = generateKeypair();
  return {
    noisePrivate: bytesToHex(privateKey),
    noisePublic: bytesToHex(publicKey),
    federationSeed: bytesToHex(randomBytes(32)),
  };
}

/**
 * The lines the server prints on start: the public keys and the file holding generated keys
 * ("generated keys kept in …" only on the start that generated them). Never includes a private
 * value.
 */
export function describeKeys(config: Config): string[] {
  const federationKey = federationKeypair(config.crypto.federationSeed).publicKey;
  const lines = [
    `noise static public key: ${bytesToHex(config.crypto.noisePublic)}`,
    `federation public key (Ed25519): ${bytesToHex(federationKey)}`,
  ];
  const file = config.crypto.generatedKeyFile;
  if (file && config.crypto.keysGeneratedNow) {
    lines.push(`generated keys kept in ${file} (mode 0600; keep it private)`);
  } else if (file) {
    lines.push(`keys read from ${file}`);
  }
  return lines;
}

interface KeyFile {
  noise_private?: string;
  noise_public?: string;
  federation_seed?: string;
  created_at?: string;
}

/** The keys the loader uses, and whether (and where) the key file supplied or took them. */
export interface CompletedKeys {
  noisePrivate: Uint8Array;
  federationSeed: Uint8Array;
  /** The key file, or null when both keys were configured. */
  file: string | null;
  /** True when this call generated (part of) the keys in `file`. */
  generated: boolean;
}

/**
 * Fills in a missing Noise key and/or federation seed from `<dataDir>/keys.json`, generating
 * and storing what the file lacks. The file is never overwritten when it cannot be parsed.
 */
export async function completeKeys(
  dataDir: string,
  noisePrivate: Uint8Array | null,
  federationSeed: Uint8Array | null,
): Promise<CompletedKeys> {
  if (noisePrivate && federationSeed) {
    return { noisePrivate, federationSeed, file: null, generated: false };
  }
  const file = join(dataDir, KEY_FILE_NAME);
  try {
    await Deno.mkdir(dataDir, { recursive: true });
  } catch (err) {
    throw new ConfigError(
      `cannot create [server] data_dir ${dataDir} for generated keys: ${(err as Error).message}`,
    );
  }
  // Two attempts: if another process creates the file between our read and our create, the
  // second pass reads what it wrote instead of replacing it.
  for (let attempt = 0; attempt < 2; attempt++) {
    const stored = await readKeyFile(file);
    const next: KeyFile = { ...(stored ?? {}) };
    const fresh = generateKeys();
    if (!noisePrivate && !next.noise_private) {
      next.noise_private = fresh.noisePrivate;
      next.noise_public = fresh.noisePublic;
    }
    if (!federationSeed && !next.federation_seed) next.federation_seed = fresh.federationSeed;
    const changed = !stored || next.noise_private !== stored.noise_private ||
      next.federation_seed !== stored.federation_seed;
    if (changed) {
      next.created_at ??= new Date().toISOString();
      const written = await writeKeyFile(file, next, stored !== null);
      if (!written) continue;
    } else {
      await Deno.chmod(file, 0o600).catch(() => {});
    }
    return {
      noisePrivate: noisePrivate ?? hexToBytes(next.noise_private!),
      federationSeed: federationSeed ?? hexToBytes(next.federation_seed!),
      file,
      generated: changed,
    };
  }
  throw new ConfigError(`cannot settle the generated key file ${file}: it keeps changing`);
}

async function readKeyFile(file: string): Promise<KeyFile | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw new ConfigError(`cannot read generated key file ${file}: ${(err as Error).message}`);
  }
  const broken = (why: string) =>
    new ConfigError(
      `generated key file ${file} is damaged (${why}); it was left untouched: restore it from a ` +
        "backup, or move it away to generate new keys (clients pinned to the old key will fail)",
    );
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw broken("not JSON");
  }
  if (!isTable(data)) throw broken("not a JSON object");
  const out: KeyFile = {};
  if (data.noise_private !== undefined) {
    if (typeof data.noise_private !== "string" || !/^[0-9a-f]{64}$/.test(data.noise_private)) {
      throw broken("noise_private is not 64 hex characters");
    }
    out.noise_private = data.noise_private;
    out.noise_public = bytesToHex(publicKeyOf(hexToBytes(data.noise_private)));
  }
  if (data.federation_seed !== undefined) {
    if (
      typeof data.federation_seed !== "string" ||
      !/^([0-9a-f]{2}){16,1024}$/.test(data.federation_seed)
    ) {
      throw broken("federation_seed is not hex of 16 to 1024 bytes");
    }
    out.federation_seed = data.federation_seed;
  }
  if (typeof data.created_at === "string") out.created_at = data.created_at;
  return out;
}

/**
 * Writes the key file atomically with mode 0600: a temporary file, then a hard link (which
 * refuses to replace a file another process just created) or, when updating, a rename.
 * Returns false when another process created the file first.
 */
async function writeKeyFile(file: string, data: KeyFile, replace: boolean): Promise<boolean> {
  const temp = `${file}.${crypto.randomUUID()}.tmp`;
  try {
    const text = JSON.stringify(data, null, 2) + "\n";
    await Deno.writeTextFile(temp, text, { mode: 0o600, createNew: true });
    await Deno.chmod(temp, 0o600); // the umask may have narrowed or widened it
    if (replace) {
      await Deno.rename(temp, file);
      return true;
    }
    try {
      await Deno.link(temp, file);
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.AlreadyExists) return false;
      throw err;
    }
  } catch (err) {
    throw new ConfigError(`cannot write generated key file ${file}: ${(err as Error).message}`);
  } finally {
    await Deno.remove(temp).catch(() => {});
  }
}
