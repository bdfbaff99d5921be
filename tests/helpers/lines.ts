/** The output of a child process (a chat client, say), line by line, waited on by pattern. */

const decoder = new TextDecoder();

/** Collects a stream's lines and waits for ones matching a pattern. */
export class LineWatcher {
  readonly lines: string[] = [];
  readonly done: Promise<void>;
  #wake: (() => void)[] = [];
  #ended = false;

  /** `waitMs` bounds each {@link waitFor} (a hang becomes a failure); unbounded by default. */
  constructor(stream: ReadableStream<Uint8Array>, readonly waitMs = Infinity) {
    this.done = (async () => {
      let buffer = "";
      for await (const chunk of stream) {
        buffer += decoder.decode(chunk, { stream: true });
        const parts = buffer.split("\n");
        buffer = parts.pop()!;
        this.lines.push(...parts);
        for (const w of this.#wake.splice(0)) w();
      }
      if (buffer) this.lines.push(buffer);
      this.#ended = true;
      for (const w of this.#wake.splice(0)) w();
    })();
  }

  text(): string {
    return this.lines.join("\n");
  }

  /**
   * Resolves with the `count`-th matching line and its index; fails, with this output and
   * `other`'s (the process's other stream), when the stream ends first or `waitMs` pass.
   */
  async waitFor(pattern: RegExp, other?: LineWatcher, count = 1): Promise<[string, number]> {
    const deadline = Date.now() + this.waitMs;
    for (;;) {
      let seen = 0;
      for (const [i, l] of this.lines.entries()) {
        if (pattern.test(l) && ++seen === count) return [l, i];
      }
      if (this.#ended || Date.now() > deadline) {
        throw new Error(
          `no line matching ${pattern}; output:\n${this.text()}\nother stream:\n${
            other?.text() ?? ""
          }`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake.push(resolve);
        if (Number.isFinite(this.waitMs)) timer = setTimeout(resolve, 250);
      });
      clearTimeout(timer);
    }
  }
}

const CHAT = new URL("../../client/chat.ts", import.meta.url).pathname;

/**
 * Starts the chat client (`client/chat.ts`) as device `me` talking to `peer`, against the
 * relay listening on `tcpPort` with Noise key `serverKey` (hex), its keys under `home`; stdin,
 * stdout and stderr are piped.
 */
export function spawnChat(
  relay: { tcpPort: number; serverKey: string },
  me: string,
  peer: string,
  home: string,
  extra: string[] = [],
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      CHAT,
      "--server",
      `127.0.0.1:${relay.tcpPort}`,
      "--server-key",
      relay.serverKey,
      "--device",
      me,
      "--peer",
      peer,
      ...extra,
    ],
    env: { COMMUCAT_HOME: home, NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}
