/** The device key audit trail (`device_key_event`): listing and export. */
import type { Db } from "../db.ts";
import { decodeCursor, pageLimit, toPage } from "../pagination.ts";
import type { DeviceKeyEvent, KeyEventRepo, Page, PageRequest } from "../types.ts";
import { KEY_EVENT_COLUMNS, type KeyEventRow, toKeyEvent, tsFromKey, tsKey } from "./rows.ts";
import * as v from "./validate.ts";

function range(deviceId: string | null | undefined, from?: Date, to?: Date) {
  return {
    deviceId: deviceId === undefined || deviceId === null ? null : v.id("device id", deviceId),
    from: from === undefined ? null : v.date("from", from).toISOString(),
    to: to === undefined ? null : v.date("to", to).toISOString(),
  };
}

export class PgKeyEventRepo implements KeyEventRepo {
  constructor(private readonly db: Db) {}

  /** Newest first, optionally for one device and within [from, to). */
  async list(
    filter: { deviceId?: string; from?: Date; to?: Date } & PageRequest,
  ): Promise<Page<DeviceKeyEvent>> {
    const limit = pageLimit(filter.limit);
    const r = range(filter.deviceId, filter.from, filter.to);
    const after = decodeCursor(filter.cursor, ["int", "text"]);
    const res = await this.db.query<KeyEventRow & { k: string }>(
      `SELECT ${KEY_EVENT_COLUMNS}, ${tsKey("recorded_at")} AS k
       FROM device_key_event
       WHERE ($1::text IS NULL OR device_id = $1)
         AND ($2::timestamptz IS NULL OR recorded_at >= $2)
         AND ($3::timestamptz IS NULL OR recorded_at < $3)
         AND ($4::int8 IS NULL OR (recorded_at, event_id) < (${tsFromKey("$4")}, $5::text))
       ORDER BY recorded_at DESC, event_id DESC
       LIMIT $6`,
      [r.deviceId, r.from, r.to, after?.[0] ?? null, after?.[1] ?? null, limit + 1],
    );
    return toPage(res.rows, limit, toKeyEvent, (row) => [row.k, row.event_id]);
  }

  /** Every matching event in time order (oldest first), for CSV/JSON export. */
  async export(deviceId: string | null, from?: Date, to?: Date): Promise<DeviceKeyEvent[]> {
    const r = range(deviceId, from, to);
    const res = await this.db.query<KeyEventRow>(
      `SELECT ${KEY_EVENT_COLUMNS} FROM device_key_event
       WHERE ($1::text IS NULL OR device_id = $1)
         AND ($2::timestamptz IS NULL OR recorded_at >= $2)
         AND ($3::timestamptz IS NULL OR recorded_at < $3)
       ORDER BY recorded_at, event_id`,
      [r.deviceId, r.from, r.to],
    );
    return res.rows.map(toKeyEvent);
  }
}
