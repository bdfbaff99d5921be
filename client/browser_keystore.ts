/// <reference lib="dom" />
/**
 * Device keys in a browser: "this browser is a device". Each device this browser holds is an
 * IndexedDB record with its id, name and public key, and its X25519 private key encrypted
 * (AES-GCM) under a wrapping key that WebCrypto created non-extractable: the wrapping key can
 * be used by this origin's pages but its bytes can never be read, exported or copied out of
 * the browser's key store, so the stored record alone does not give the device key away.
 * The device's trust store (client/trust.ts) is kept beside it.
 *
 * A key file exported here has the same JSON shape as client/keystore.ts writes, so a device
 * can move between the web chat and the command-line chat:
 * `{"device_id", "private_key", "public_key", "created_at"}` (hex keys).
 *
 * @module
 */
import { generateKeypair, type Keypair, publicKeyOf } from "../protocol/crypto.ts";
import { bytesToHex, hexToBytes, isHex } from "../protocol/hex.ts";
import { ID_RULE, isId } from "../protocol/ids.ts";
import { TrustStore } from "./trust.ts";

/** A device held by this browser, without its private key. */
export interface BrowserDeviceSummary {
  deviceId: string;
  /** The name the user chose. */
  name: string;
  publicKey: Uint8Array;
  /** The public key as 64 hex characters in groups of four (what to compare). */
  fingerprint: string;
  createdAt: string;
}

/** A device with its keypair, ready for `connect`. */
export interface BrowserDevice extends BrowserDeviceSummary {
  keypair: Keypair;
}

/** Thrown when a key file or a stored record cannot be used; the message says why. */
export class BrowserKeystoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BrowserKeystoreError";
  }
}

/** Most devices one browser keeps (a refusal beyond). */
export const MAX_BROWSER_DEVICES = 32;

interface DeviceRecord {
  deviceId: string;
  name: string;
  publicKey: string;
  iv: Uint8Array;
  sealedKey: Uint8Array;
  createdAt: string;
}

const DEVICES = "devices";
const WRAPPING = "wrapping";
const TRUST = "trust";
const WRAPPING_ID = "device-keys";

/** 64 hex characters in groups of four: the form keys are shown and compared in. */
export function keyFingerprint(key: Uint8Array): string {
  return bytesToHex(key).replace(/(.{4})(?=.)/g, "$1 ");
}

/** A device id from a chosen name: `<name as letters, digits, - >-<8 random hex>`. */
export function deviceIdFor(name: string): string {
  const slug = name.normalize("NFKD").replace(/[^A-Za-z0-9]+/g, "-").replace(/^-+|-+$/g, "")
    .toLowerCase().slice(0, 40);
  const random = bytesToHex(crypto.getRandomValues(new Uint8Array(4)));
  return `${slug || "web"}-${random}`;
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

/** The devices this browser holds, in IndexedDB database `name` (default "commucat"). */
export class BrowserKeystore {
  #db: IDBDatabase;
  #wrapping: CryptoKey;

  private constructor(db: IDBDatabase, wrapping: CryptoKey) {
    this.#db = db;
    this.#wrapping = wrapping;
  }

  /** Opens (or creates) the keystore of this origin. */
  static async open(name = "commucat"): Promise<BrowserKeystore> {
    if (typeof indexedDB === "undefined" || !globalThis.crypto?.subtle) {
      throw new BrowserKeystoreError(
        "this browser offers no IndexedDB or WebCrypto here (a private window or an insecure " +
          "origin): open the chat over https or from localhost",
      );
    }
    const open = indexedDB.open(name, 1);
    open.onupgradeneeded = () => {
      const db = open.result;
      db.createObjectStore(DEVICES, { keyPath: "deviceId" });
      db.createObjectStore(WRAPPING);
      db.createObjectStore(TRUST);
    };
    const db = await request(open);
    const tx = db.transaction(WRAPPING, "readonly");
    let wrapping = await request(tx.objectStore(WRAPPING).get(WRAPPING_ID)) as
      | CryptoKey
      | undefined;
    if (!wrapping) {
      const fresh = await crypto.subtle.generateKey(
        { name: "AES-GCM", length: 256 },
        false, // non-extractable: usable here, never readable
        ["encrypt", "decrypt"],
      );
      const write = db.transaction(WRAPPING, "readwrite");
      // add, not put: of two tabs racing on first use, the second one's add fails and it
      // reads the first one's key instead.
      write.objectStore(WRAPPING).add(fresh, WRAPPING_ID);
      try {
        await done(write);
        wrapping = fresh;
      } catch {
        const again = db.transaction(WRAPPING, "readonly");
        wrapping = await request(again.objectStore(WRAPPING).get(WRAPPING_ID)) as CryptoKey;
      }
    }
    return new BrowserKeystore(db, wrapping!);
  }

  /** Every device this browser holds, oldest first. */
  async list(): Promise<BrowserDeviceSummary[]> {
    const tx = this.#db.transaction(DEVICES, "readonly");
    const records = await request(tx.objectStore(DEVICES).getAll()) as DeviceRecord[];
    return records.map(summary).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** A new device named `name` with a fresh keypair. */
  async create(name: string): Promise<BrowserDevice> {
    const trimmed = name.trim();
    if (trimmed.length === 0 || trimmed.length > 64) {
      throw new BrowserKeystoreError("a device name is 1 to 64 characters");
    }
    return await this.#store(deviceIdFor(trimmed), trimmed, generateKeypair(), null);
  }

  /** The device `deviceId` with its decrypted keypair. */
  async load(deviceId: string): Promise<BrowserDevice> {
    const tx = this.#db.transaction(DEVICES, "readonly");
    const record = await request(tx.objectStore(DEVICES).get(deviceId)) as
      | DeviceRecord
      | undefined;
    if (!record) throw new BrowserKeystoreError(`this browser holds no device ${deviceId}`);
    let privateKey: Uint8Array;
    try {
      privateKey = new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv: record.iv as Uint8Array<ArrayBuffer> },
          this.#wrapping,
          record.sealedKey as Uint8Array<ArrayBuffer>,
        ),
      );
    } catch (cause) {
      throw new BrowserKeystoreError(
        `the key of device ${deviceId} cannot be unwrapped (stored by another browser profile?)`,
        { cause },
      );
    }
    return { ...summary(record), keypair: { privateKey, publicKey: hexToBytes(record.publicKey) } };
  }

  /** Forgets a device and its trust store. */
  async remove(deviceId: string): Promise<void> {
    const tx = this.#db.transaction([DEVICES, TRUST], "readwrite");
    tx.objectStore(DEVICES).delete(deviceId);
    tx.objectStore(TRUST).delete(deviceId);
    await done(tx);
  }

  /** The device's key file (JSON text; it holds the private key: keep it safe). */
  async exportKeyFile(deviceId: string): Promise<string> {
    const device = await this.load(deviceId);
    return JSON.stringify(
      {
        device_id: device.deviceId,
        name: device.name,
        private_key: bytesToHex(device.keypair.privateKey),
        public_key: bytesToHex(device.keypair.publicKey),
        created_at: device.createdAt,
      },
      null,
      2,
    ) + "\n";
  }

  /**
   * Imports a key file (from {@link exportKeyFile} or client/keystore.ts). Refuses a file that
   * is not one, whose public key does not match its private key, or whose device this browser
   * already holds with another key.
   */
  async importKeyFile(text: string): Promise<BrowserDevice> {
    let data: Record<string, unknown>;
    try {
      data = JSON.parse(text);
    } catch (cause) {
      throw new BrowserKeystoreError("the key file is not JSON", { cause });
    }
    if (typeof data !== "object" || data === null) {
      throw new BrowserKeystoreError("the key file is not a JSON object");
    }
    if (!isId(data.device_id)) {
      throw new BrowserKeystoreError(`the key file's device_id must be ${ID_RULE}`);
    }
    if (!isHex(data.private_key, 32)) {
      throw new BrowserKeystoreError("the key file's private_key must be 64 hex characters");
    }
    const privateKey = hexToBytes(data.private_key, 32);
    const publicKey = publicKeyOf(privateKey);
    if (data.public_key !== undefined && data.public_key !== bytesToHex(publicKey)) {
      throw new BrowserKeystoreError("the key file's public_key does not match its private_key");
    }
    const deviceId = data.device_id;
    const existing = (await this.list()).find((d) => d.deviceId === deviceId);
    if (existing && bytesToHex(existing.publicKey) !== bytesToHex(publicKey)) {
      throw new BrowserKeystoreError(
        `this browser already holds device ${deviceId} with another key; remove it first`,
      );
    }
    const name = typeof data.name === "string" && data.name.trim() !== ""
      ? data.name.trim().slice(0, 64)
      : deviceId;
    const createdAt = typeof data.created_at === "string" ? data.created_at : null;
    return await this.#store(deviceId, name, { privateKey, publicKey }, createdAt);
  }

  /** The device's trust store, saved in IndexedDB on every change. */
  async trustStore(deviceId: string): Promise<TrustStore> {
    const persist = async (text: string) => {
      const tx = this.#db.transaction(TRUST, "readwrite");
      tx.objectStore(TRUST).put(text, deviceId);
      await done(tx);
    };
    const tx = this.#db.transaction(TRUST, "readonly");
    const text = await request(tx.objectStore(TRUST).get(deviceId)) as string | undefined;
    if (text === undefined) return new TrustStore({ persist });
    try {
      return TrustStore.fromJSON(text, { persist });
    } catch (cause) {
      throw new BrowserKeystoreError(
        `the trust store of device ${deviceId} is damaged: ${(cause as Error).message}`,
        { cause },
      );
    }
  }

  async #store(
    deviceId: string,
    name: string,
    keypair: Keypair,
    createdAt: string | null,
  ): Promise<BrowserDevice> {
    const held = await this.list();
    if (!held.some((d) => d.deviceId === deviceId) && held.length >= MAX_BROWSER_DEVICES) {
      throw new BrowserKeystoreError(
        `this browser already holds ${held.length} devices (the limit); remove one first`,
      );
    }
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const sealedKey = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv },
        this.#wrapping,
        keypair.privateKey as Uint8Array<ArrayBuffer>,
      ),
    );
    const record: DeviceRecord = {
      deviceId,
      name,
      publicKey: bytesToHex(keypair.publicKey),
      iv,
      sealedKey,
      createdAt: createdAt ?? new Date().toISOString(),
    };
    const tx = this.#db.transaction(DEVICES, "readwrite");
    tx.objectStore(DEVICES).put(record);
    await done(tx);
    return { ...summary(record), keypair };
  }

  /** Closes the database connection. */
  close(): void {
    this.#db.close();
  }
}

function summary(record: DeviceRecord): BrowserDeviceSummary {
  const publicKey = hexToBytes(record.publicKey);
  return {
    deviceId: record.deviceId,
    name: record.name,
    publicKey,
    fingerprint: keyFingerprint(publicKey),
    createdAt: record.createdAt,
  };
}
