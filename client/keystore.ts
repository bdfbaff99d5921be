/**
 * The device identity file: a device id and its static X25519 keypair, generated on first
 * use and kept in a JSON file readable only by its owner (mode 0600).
 *
 * ```json
 * {"device_id":"laptop-3f2a","private_key":"<64 hex>","public_key":"<64 hex>",
 *  "created_at":"2026-01-01T00:00:00.000Z"}
 * ```
 *
 * @module
 */

import { dirname, join } from "node:path";
import { ProblemError } from "../protocol/errors.ts";
import { ID_RULE, isId } from "../protocol/ids.ts";
import { bytesEqual, generateKeypair, type Keypair, publicKeyOf } from "../protocol/crypto.ts";
import { bytesToHex, hexToBytes, isHex } from "../protocol/hex.ts";
import { TrustStore } from "./trust.ts";

/** A device identity as stored. */
export interface DeviceIdentity {
  deviceId: string;
  keypair: Keypair;
  createdAt: string;
  /** The file it lives in. */
  file: string;
  /** True when this call generated it. */
  created: boolean;
}

/** Thrown when the key file cannot be used; the message names the file and the problem. */
export class KeystoreError extends ProblemError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("Key File Error", 400, message, { fatal: true, cause: options?.cause });
    this.name = "KeystoreError";
  }
}

/**
 * The default key file of a profile: `$COMMUCAT_HOME/<profile>.json`, else
 * `~/.commucat/<profile>.json`.
 */
export function defaultKeyFile(profile: string): string {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(profile) || profile.startsWith(".")) {
    throw new KeystoreError(
      `profile ${JSON.stringify(profile)} must be 1–64 letters, digits, . _ or - ` +
        "(and not start with a dot)",
    );
  }
  const home = Deno.env.get("COMMUCAT_HOME") ??
    join(Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE") ?? ".", ".commucat");
  return join(home, `${profile}.json`);
}

/** A fresh device id: `<prefix>-<8 random hex>`. */
export function newDeviceId(prefix = "device"): string {
  const random = bytesToHex(crypto.getRandomValues(new Uint8Array(4)));
  return `${prefix}-${random}`;
}

/**
 * Loads the identity in `file`, or generates one (with `deviceId`, or a random id) and
 * writes it with mode 0600 when the file does not exist. When `deviceId` is given and the
 * file holds another id, that is an error (one key file per device).
 */
export async function loadOrCreateIdentity(
  file: string,
  deviceId?: string,
): Promise<DeviceIdentity> {
  if (deviceId !== undefined && !isId(deviceId)) {
    throw new KeystoreError(`device id ${JSON.stringify(deviceId)} must be ${ID_RULE}`);
  }
  let text: string | null = null;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw new KeystoreError(`cannot read key file ${file}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
  if (text !== null) {
    const identity = parseIdentity(text, file);
    if (deviceId !== undefined && identity.deviceId !== deviceId) {
      throw new KeystoreError(
        `key file ${file} belongs to device ${identity.deviceId}, not ${deviceId}: ` +
          "use another --key-file or --profile for a second device",
      );
    }
    await tightenMode(file);
    return identity;
  }
  const keypair = generateKeypair();
  const identity: DeviceIdentity = {
    deviceId: deviceId ?? newDeviceId(),
    keypair,
    createdAt: new Date().toISOString(),
    file,
    created: true,
  };
  const body = JSON.stringify(
    {
      device_id: identity.deviceId,
      private_key: bytesToHex(keypair.privateKey),
      public_key: bytesToHex(keypair.publicKey),
      created_at: identity.createdAt,
    },
    null,
    2,
  ) + "\n";
  try {
    await Deno.mkdir(dirname(file), { recursive: true, mode: 0o700 });
    // createNew: two processes racing on first use must not overwrite each other's key.
    await Deno.writeTextFile(file, body, { mode: 0o600, createNew: true });
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) return loadOrCreateIdentity(file, deviceId);
    throw new KeystoreError(`cannot write key file ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return identity;
}

/**
 * Writes `keypair` as the identity's key (after `client.rotateKey`): to a sibling file first,
 * then renamed over the key file, so a crash leaves either the old or the new file whole.
 * Returns the identity with the new key.
 */
export async function replaceIdentityKey(
  identity: DeviceIdentity,
  keypair: Keypair,
): Promise<DeviceIdentity> {
  const body = JSON.stringify(
    {
      device_id: identity.deviceId,
      private_key: bytesToHex(keypair.privateKey),
      public_key: bytesToHex(keypair.publicKey),
      created_at: identity.createdAt,
      rotated_at: new Date().toISOString(),
    },
    null,
    2,
  ) + "\n";
  const next = `${identity.file}.next`;
  try {
    await Deno.writeTextFile(next, body, { mode: 0o600 });
    await Deno.rename(next, identity.file);
  } catch (error) {
    throw new KeystoreError(
      `cannot write the rotated key to ${identity.file}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  return { ...identity, keypair, created: false };
}

/** Parses a key file's JSON; throws KeystoreError naming the bad field (never the key). */
export function parseIdentity(text: string, file: string): DeviceIdentity {
  let data: Record<string, unknown>;
  try {
    data = JSON.parse(text);
  } catch {
    throw new KeystoreError(`key file ${file} is not valid JSON; it was left untouched`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new KeystoreError(`key file ${file} must hold a JSON object`);
  }
  if (!isId(data.device_id)) {
    throw new KeystoreError(`key file ${file}: device_id is missing or not a valid device id`);
  }
  if (!isHex(data.private_key, 32)) {
    throw new KeystoreError(`key file ${file}: private_key must be 64 hex characters`);
  }
  const privateKey = hexToBytes(data.private_key, 32);
  const publicKey = publicKeyOf(privateKey);
  if (data.public_key !== undefined) {
    if (!isHex(data.public_key, 32) || !bytesEqual(hexToBytes(data.public_key), publicKey)) {
      throw new KeystoreError(
        `key file ${file}: public_key does not belong to private_key (file damaged?)`,
      );
    }
  }
  return {
    deviceId: data.device_id,
    keypair: { privateKey, publicKey },
    createdAt: typeof data.created_at === "string" ? data.created_at : "",
    file,
    created: false,
  };
}

/** Tightens a key file readable by others back to 0600 (best effort, POSIX only). */
async function tightenMode(file: string): Promise<void> {
  try {
    const info = await Deno.stat(file);
    if (info.mode !== null && (info.mode & 0o077) !== 0) await Deno.chmod(file, 0o600);
  } catch {
    // Not POSIX, or not ours to change: the key still works.
  }
}

/** The trust store file that goes with a key file: `<name>.trust.json` next to it. */
export function trustFileFor(keyFile: string): string {
  return keyFile.endsWith(".json") ? `${keyFile.slice(0, -5)}.trust.json` : `${keyFile}.trust.json`;
}

/**
 * Opens the end-to-end trust store kept in `file` (pinned keys, verifications, counters and
 * replay windows; see client/trust.ts), or a new empty one when the file does not exist. Every
 * change is written back atomically (a temporary file renamed over it, mode 0600). A damaged
 * file is refused (KeystoreError), never overwritten.
 */
export async function openTrustStore(file: string): Promise<TrustStore> {
  const persist = async (text: string) => {
    const tmp = `${file}.${crypto.randomUUID().slice(0, 8)}.tmp`;
    try {
      await Deno.mkdir(dirname(file), { recursive: true, mode: 0o700 });
      await Deno.writeTextFile(tmp, text + "\n", { mode: 0o600 });
      await Deno.rename(tmp, file);
    } catch (error) {
      await Deno.remove(tmp).catch(() => {});
      throw new KeystoreError(`cannot write trust store ${file}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  };
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return new TrustStore({ persist });
    throw new KeystoreError(`cannot read trust store ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  try {
    return TrustStore.fromJSON(text, { persist });
  } catch (error) {
    throw new KeystoreError(
      `trust store ${file} is damaged (${(error as Error).message}); it was left untouched`,
      { cause: error },
    );
  }
}

/**
 * The server keys a client pinned for one server address after following a key rotation
 * (the SDK's "serverKey" event): kept in `<name>.servers.json` next to the key file.
 */
export interface ServerPin {
  /** The key to connect with (hex). */
  server_key: string;
  /** Keys to try when that one fails (hex). */
  next_server_keys: string[];
  /** The Ed25519 federation key (hex) the catalog that taught them was signed with. */
  federation_key: string;
  updated_at: string;
}

/** The pinned-server-keys file that goes with a key file: `<name>.servers.json` next to it. */
export function serverPinFileFor(keyFile: string): string {
  return keyFile.endsWith(".json")
    ? `${keyFile.slice(0, -5)}.servers.json`
    : `${keyFile}.servers.json`;
}

function parsePins(text: string, file: string): Record<string, ServerPin> {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new KeystoreError(`pinned server keys ${file} are damaged (not JSON); left untouched`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new KeystoreError(`pinned server keys ${file} are damaged (not an object)`);
  }
  const out: Record<string, ServerPin> = {};
  for (const [address, pin] of Object.entries(data as Record<string, unknown>)) {
    const p = pin as Partial<ServerPin> | null;
    if (
      !p || !isHex(p.server_key, 32) || !isHex(p.federation_key, 32) ||
      !Array.isArray(p.next_server_keys) || !p.next_server_keys.every((k) => isHex(k, 32))
    ) {
      throw new KeystoreError(`pinned server keys ${file}: the entry of ${address} is damaged`);
    }
    out[address] = {
      server_key: p.server_key!,
      next_server_keys: [...p.next_server_keys],
      federation_key: p.federation_key!,
      updated_at: String(p.updated_at ?? ""),
    };
  }
  return out;
}

/** The keys pinned for `address` in `file`, or null (no file, or no entry). */
export async function readServerPin(file: string, address: string): Promise<ServerPin | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw new KeystoreError(`cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  return parsePins(text, file)[address] ?? null;
}

/** Pins `pin` for `address` in `file` (written atomically, mode 0600; other entries kept). */
export async function writeServerPin(file: string, address: string, pin: ServerPin): Promise<void> {
  let all: Record<string, ServerPin> = {};
  try {
    all = parsePins(await Deno.readTextFile(file), file);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  all[address] = pin;
  const tmp = `${file}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    await Deno.mkdir(dirname(file), { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(tmp, JSON.stringify(all, null, 2) + "\n", { mode: 0o600 });
    await Deno.rename(tmp, file);
  } catch (error) {
    await Deno.remove(tmp).catch(() => {});
    throw new KeystoreError(`cannot write ${file}: ${(error as Error).message}`, { cause: error });
  }
}
