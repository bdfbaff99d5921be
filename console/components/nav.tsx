/** The main navigation; the current section carries aria-current. */

export type NavKey =
  | "dashboard"
  | "devices"
  | "users"
  | "groups"
  | "peers"
  | "key-events"
  | "analytics"
  | "audit";

const ITEMS: [NavKey, string, string][] = [
  ["dashboard", "/", "Dashboard"],
  ["devices", "/devices", "Devices"],
  ["users", "/users", "Users"],
  ["groups", "/groups", "Groups"],
  ["peers", "/peers", "Federation peers"],
  ["key-events", "/key-events", "Key events"],
  ["analytics", "/analytics", "Analytics"],
  ["audit", "/audit", "Audit log"],
];

export function Nav(props: { active?: NavKey; pendingApprovals?: number | null }) {
  const pending = props.pendingApprovals ?? 0;
  return (
    <nav class="main" aria-label="Sections">
      <ul>
        {ITEMS.map(([key, path, label]) => (
          <li>
            <a href={path} aria-current={props.active === key ? "page" : undefined}>
              {label}
              {key === "devices" && pending > 0 && (
                <span
                  class="nav-badge"
                  title={`${pending} waiting for approval`}
                  aria-label={`${pending} waiting for approval`}
                >
                  {pending}
                </span>
              )}
            </a>
          </li>
        ))}
      </ul>
    </nav>
  );
}
