/**
 * Row shapes as the database returns them, the mappers to the contract's types, and SQL
 * helpers shared by the repositories.
 */
import { Conflict, InvalidValue, NotFound, StorageError } from "../errors.ts";
import { sqlState } from "../db.ts";
import { bytesEqual } from "../../protocol/crypto.ts";
import type { Device, DeviceKeyEvent, DeviceWithUser, KeyEventKind, User } from "../types.ts";

/** SQL for a timestamp column as an exact microsecond key (int8, returned as a string). */
export function tsKey(column: string): string {
  return `(extract(epoch FROM ${column}) * 1000000)::int8`;
}

/** SQL turning a microsecond key parameter back into a timestamptz, exactly. */
export function tsFromKey(param: string): string {
  return `(timestamptz 'epoch' + ${param}::int8 * interval '1 microsecond')`;
}

export interface UserRow {
  user_id: string;
  handle: string;
  display_name: string | null;
  avatar_url: string | null;
  created_at: Date;
  updated_at: Date;
}

export const USER_COLUMNS = "user_id, handle, display_name, avatar_url, created_at, updated_at";

export function toUser(r: UserRow): User {
  return {
    id: r.user_id,
    handle: r.handle,
    displayName: r.display_name,
    avatarUrl: r.avatar_url,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export interface DeviceRow {
  device_id: string;
  user_id: string;
  public_key: Uint8Array;
  status: Device["status"];
  pending_public_key: Uint8Array | null;
  created_at: Date;
  updated_at: Date;
  last_seen_at: Date | null;
}

export const DEVICE_COLUMNS =
  "device_id, user_id, public_key, status, pending_public_key, created_at, updated_at, last_seen_at";

export function toDevice(r: DeviceRow): Device {
  return {
    id: r.device_id,
    userId: r.user_id,
    publicKey: r.public_key,
    status: r.status,
    pendingPublicKey: r.pending_public_key,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    lastSeenAt: r.last_seen_at,
  };
}

export function toDeviceWithUser(r: DeviceRow & { handle: string }): DeviceWithUser {
  return { ...toDevice(r), userHandle: r.handle };
}

export interface KeyEventRow {
  event_id: string;
  device_id: string;
  public_key: Uint8Array;
  kind: KeyEventKind;
  actor: string;
  recorded_at: Date;
}

export const KEY_EVENT_COLUMNS = "event_id, device_id, public_key, kind, actor, recorded_at";

export function toKeyEvent(r: KeyEventRow): DeviceKeyEvent {
  return {
    eventId: r.event_id,
    deviceId: r.device_id,
    publicKey: r.public_key,
    kind: r.kind,
    actor: r.actor,
    recordedAt: r.recorded_at,
  };
}

/** Two byte strings (or nulls) are equal; bytes compared by the one comparison of protocol/. */
export function sameBytes(a: Uint8Array | null, b: Uint8Array | null): boolean {
  return a === null || b === null ? a === b : bytesEqual(a, b);
}

/**
 * Translate constraint violations that slipped past validation into typed errors; anything
 * else (already typed, or a real storage failure) passes through unchanged.
 */
export function translate(err: unknown, what: string, id: string): unknown {
  if (!(err instanceof StorageError)) return err;
  switch (sqlState(err)) {
    case "23505":
      return new Conflict(`${what} ${JSON.stringify(id)} already exists`);
    case "23503":
      return new NotFound("referenced row for " + what, id);
    case "23514":
    case "22P02":
    case "22021":
      return new InvalidValue(what, id, "a value the schema accepts");
    default:
      return err;
  }
}
