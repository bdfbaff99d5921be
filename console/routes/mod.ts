/** The route manifest: one module per page, registered in this order. */
export * as dashboard from "./dashboard.tsx";
export * as live from "./live.ts";
export * as signIn from "./sign_in.tsx";
export * as devices from "./devices.tsx";
export * as deviceActions from "./device_actions.tsx";
export * as deviceDetail from "./device_detail.tsx";
export * as users from "./users.tsx";
export * as groups from "./groups.tsx";
export * as groupRoles from "./group_roles.tsx";
export * as peers from "./peers.tsx";
export * as keyEventArchive from "./key_event_archive.tsx";
export * as keyEvents from "./key_events.tsx";
export * as analytics from "./analytics.tsx";
export * as audit from "./audit.tsx";
export * as staticFiles from "./static.ts";
