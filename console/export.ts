/** Key-event exports of the console: the one export module of admin/export.ts. */
import type { DeviceKeyEvent } from "../storage/types.ts";
import { keyEventView } from "../admin/views.ts";
import * as exports from "../admin/export.ts";

export { csvCell, exportFileName } from "../admin/export.ts";

/** The events as CSV with a header row, CRLF line ends (RFC 4180). */
export const toCsv = (events: DeviceKeyEvent[]): string => exports.toCsv(events.map(keyEventView));

/** The events as pretty JSON. */
export const toJson = (events: DeviceKeyEvent[]): string =>
  exports.toJson(events.map(keyEventView));
