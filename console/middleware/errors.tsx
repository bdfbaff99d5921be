// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/**
 * Failures become friendly pages: storage and Redis failures show the guide's troubleshooting
 * hint (503), typed storage errors show their message with their status, and anything else is
 * logged and shown as a generic 500 without internals.
 */
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import { ProblemError } from "../../protocol/errors.ts";
import { StorageError, troubleshootingHint } from "../../storage/errors.ts";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import { renderPage } from "../render.tsx";
import { ErrorBox } from "../components/flash.tsx";

/** A request the console cannot serve, with a message for the operator. */
export class PageError extends ProblemError {
  constructor(status: number, title: string, detail: string) {
    super(title, status, detail);
    this.name = "PageError";
  }
}

/** The error page for `err`. */
export function errorPage(err: unknown, c: Context<AppEnv>, deps: ConsoleDeps): Response {
  if (err instanceof PageError) {
    return renderPage(c, deps, { title: err.title, status: err.status }, [
      <ErrorBox title={err.title + "."} detail={err.message} />,
      <p>
        <a href="/">Back to the dashboard</a>
      </p>,
    ]);
  }
  if (err instanceof HTTPException) {
    return renderPage(c, deps, { title: "Bad request", status: err.status }, [
      <ErrorBox title="The request could not be read." detail={err.message} />,
    ]);
  }
  const hint = troubleshootingHint(err);
  if (err instanceof StorageError) {
    if (err.status >= 500) {
      deps.log.error("console: storage unavailable", { path: c.req.path, error: err });
    }
    const title = err.status >= 500 ? "Storage unavailable" : "Request refused";
    return renderPage(c, deps, { title, status: err.status }, [
      <ErrorBox title={`${err.title}:`} detail={err.message} hint={hint} />,
      <p>
        <a href={c.req.path}>Try again</a> · <a href="/">Dashboard</a>
      </p>,
    ]);
  }
  deps.log.error("console: request failed", { path: c.req.path, error: err });
  return renderPage(c, deps, { title: "Something went wrong", status: 500 }, [
    <ErrorBox
      title="The console could not complete this request."
      detail="The error was written to the server log."
    />,
    <p>
      <a href="/">Back to the dashboard</a>
    </p>,
  ]);
}
