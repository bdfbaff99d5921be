/** GET /live/figures: server-sent events carrying each new dashboard sample. */
import type { Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import type { FigureSample } from "../figures.ts";

export function register(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  app.get("/live/figures", () => {
    const encoder = new TextEncoder();
    let unsubscribe: (() => void) | null = null;
    let keepalive: ReturnType<typeof setInterval> | null = null;
    const end = () => {
      unsubscribe?.();
      unsubscribe = null;
      if (keepalive !== null) clearInterval(keepalive);
      keepalive = null;
      deps.closing.removeEventListener("abort", onClose);
    };
    let onClose = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        const send = (s: FigureSample) => {
          try {
            controller.enqueue(encoder.encode(`event: sample\ndata: ${JSON.stringify(s)}\n\n`));
          } catch {
            end();
          }
        };
        onClose = () => {
          end();
          try {
            controller.close();
          } catch { /* already closed */ }
        };
        if (deps.closing.aborted) return onClose();
        deps.closing.addEventListener("abort", onClose);
        controller.enqueue(encoder.encode(`retry: 5000\n\n`));
        unsubscribe = deps.sampler.subscribe(send);
        // A comment line now and then keeps proxies from closing an idle stream.
        keepalive = setInterval(() => {
          try {
            controller.enqueue(encoder.encode(": keepalive\n\n"));
          } catch {
            end();
          }
        }, 30_000);
        void deps.sampler.sample();
      },
      cancel() {
        end();
      },
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
        "x-accel-buffering": "no",
      },
    });
  });
}
