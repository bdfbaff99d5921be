// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/** The page frame: head, skip link, header with navigation and sign-out, flash messages. */
import type { ComponentChildren } from "preact";
import { Nav, type NavKey } from "./nav.tsx";
import { FlashMessages } from "./flash.tsx";
import type { Flash } from "../middleware/session.ts";

export interface LayoutProps {
  title: string;
  active?: NavKey;
  nodeId: string;
  /** Present when signed in: the CSRF token for the sign-out form and the operator label. */
  operator?: { csrf: string; label: string } | null;
  flash?: Flash[];
  /** Devices and keys waiting for approval, shown as a badge in the navigation. */
  pendingApprovals?: number | null;
  /** Island bundles this page loads (names under /static/). */
  scripts?: string[];
  children: ComponentChildren;
}

export function Layout(props: LayoutProps) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>{`${props.title} · CommuCat console`}</title>
        <link rel="stylesheet" href="/static/console.css" />
        <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
        {props.scripts?.map((s) => <script type="module" src={`/static/${s}`} defer></script>)}
      </head>
      <body>
        <a class="skip" href="#content">Skip to content</a>
        <header class="top">
          <a class="brand" href="/">CommuCat console</a>
          <span class="node" title="Node serving this console">node {props.nodeId}</span>
          {props.operator && (
            <form method="post" action="/sign-out" class="signout">
              <input type="hidden" name="_csrf" value={props.operator.csrf} />
              <span class="operator" title="Your operator id in the audit log">
                console:{props.operator.label}
              </span>
              <button type="submit" class="link">Sign out</button>
            </form>
          )}
        </header>
        {props.operator && (
          <Nav active={props.active} pendingApprovals={props.pendingApprovals ?? null} />
        )}
        <main id="content" tabIndex={-1}>
          <h1>{props.title}</h1>
          <FlashMessages flash={props.flash ?? []} />
          {props.children}
        </main>
      </body>
    </html>
  );
}
