import assert from "node:assert/strict";
import {
  formatLine,
  getLogLevel,
  log,
  redact,
  redactUrlPassword,
  setLogLevel,
  setLogSink,
} from "../../server/log.ts";

/** Runs `fn` with log lines captured; restores the sink and level afterwards. */
function capture(fn: () => void): Record<string, unknown>[] {
  const lines: string[] = [];
  const previousSink = setLogSink((line) => lines.push(line));
  const previousLevel = getLogLevel();
  try {
    fn();
  } finally {
    setLogSink(previousSink);
    setLogLevel(previousLevel);
  }
  for (const line of lines) assert.ok(!line.includes("\n"), "one line per event");
  return lines.map((line) => JSON.parse(line));
}

Deno.test("each event is one JSON line with ts, level, msg and fields", () => {
  const [line] = capture(() => log.info("delivered frame", { device: "dev-1", bytes: 42 }));
  assert.equal(line.level, "info");
  assert.equal(line.msg, "delivered frame");
  assert.equal(line.device, "dev-1");
  assert.equal(line.bytes, 42);
  assert.match(String(line.ts), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.deepEqual(Object.keys(line).slice(0, 3), ["ts", "level", "msg"]);
});

Deno.test("levels: debug is off by default, on when the level is debug", () => {
  const lines = capture(() => {
    setLogLevel("info");
    log.debug("hidden");
    log.info("i");
    log.warn("w");
    log.error("e");
    setLogLevel("debug");
    log.debug("shown");
    setLogLevel("error");
    log.warn("hidden too");
  });
  assert.deepEqual(lines.map((l) => [l.level, l.msg]), [
    ["info", "i"],
    ["warn", "w"],
    ["error", "e"],
    ["debug", "shown"],
  ]);
  assert.throws(() => setLogLevel("loud" as never), /unknown log level/);
});

Deno.test("child loggers add their fields; call fields win", () => {
  const lines = capture(() => {
    const conn = log.child({ component: "session", connection: 7 });
    conn.info("opened");
    conn.child({ device: "d" }).warn("slow", { connection: 8 });
  });
  assert.equal(lines[0].component, "session");
  assert.equal(lines[0].connection, 7);
  assert.equal(lines[1].device, "d");
  assert.equal(lines[1].connection, 8);
});

Deno.test("secret-looking fields are redacted at any depth", () => {
  const [line] = capture(() =>
    log.info("config", {
      noise_private: "aa",
      federationSeed: "bb",
      admin_token: "cc",
      password: "dd",
      postgres_dsn: "postgres://u:pw@h/d",
      clientSecret: "ee",
      nested: { deeper: { apiToken: "ff", public_key: "11" } },
      list: [{ secret: "gg" }],
    })
  );
  const text = JSON.stringify(line);
  for (const secret of ["aa", "bb", "cc", "dd", "pw", "ee", "ff", "gg"]) {
    assert.ok(!text.includes(`"${secret}"`) && !text.includes(`:${secret}@`), secret);
  }
  assert.equal(line.noise_private, "[redacted]");
  assert.equal(line.postgres_dsn, "[redacted]");
  assert.deepEqual(line.nested, { deeper: { apiToken: "[redacted]", public_key: "11" } });
});

Deno.test("passwords inside URLs are masked wherever they appear", () => {
  assert.equal(
    redactUrlPassword("postgres://commucat:secret@db:5432/commucat"),
    "postgres://commucat:[redacted]@db:5432/commucat",
  );
  assert.equal(
    redactUrlPassword("redis://:pw@127.0.0.1:6379/2"),
    "redis://:[redacted]@127.0.0.1:6379/2",
  );
  assert.equal(redactUrlPassword("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
  const [line] = capture(() =>
    log.error("connect failed", { url: "postgres://u:hunter2@h/d", err: new Error("x") })
  );
  assert.equal(line.url, "postgres://u:[redacted]@h/d");
});

Deno.test("errors become {name, message}; odd values stay loggable", () => {
  const err = new TypeError("bad thing");
  (err as unknown as { secretDetail: string }).secretDetail = "zz";
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  const [line] = capture(() =>
    log.error("failed", {
      err,
      big: 10n,
      bytes: new Uint8Array([1, 2, 255]),
      when: new Date(0),
      nan: NaN,
      cyclic,
      skipped: undefined,
      msg: "not the message",
    })
  );
  assert.deepEqual(line.err, { name: "TypeError", message: "bad thing" });
  assert.equal(line.big, "10");
  assert.equal(line.bytes, "0102ff");
  assert.equal(line.when, "1970-01-01T00:00:00.000Z");
  assert.equal(line.nan, "NaN");
  assert.deepEqual(line.cyclic, { a: 1, self: "[circular]" });
  assert.ok(!("skipped" in line));
  assert.equal(line.msg, "failed");
  assert.equal(line.field_msg, "not the message");
});

Deno.test("a field that throws does not make logging throw", () => {
  const hostile = {
    get boom() {
      throw new Error("getter");
    },
  };
  const [line] = capture(() => log.info("still logged", { hostile }));
  assert.equal(line.msg, "still logged");
  assert.deepEqual(line.log_error, { name: "Error", message: "getter" });
});

Deno.test("redact and formatLine are usable directly", () => {
  assert.deepEqual(redact({ token: "x", n: 1 }), { token: "[redacted]", n: 1 });
  assert.equal(
    formatLine("warn", "m", { a: 1 }, new Date(0)),
    '{"ts":"1970-01-01T00:00:00.000Z","level":"warn","msg":"m","a":1}',
  );
});

Deno.test("COMMUCAT_LOG_LEVEL=debug turns debug lines on in a new process", async () => {
  const module = new URL("../../server/log.ts", import.meta.url).href;
  const script = `const { log } = await import(${JSON.stringify(module)});` +
    `log.debug("dbg", { token: "t" }); log.info("inf");`;
  const run = async (level: string) => {
    const { stdout, success } = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--config", new URL("../../deno.json", import.meta.url).pathname, script],
      env: { COMMUCAT_LOG_LEVEL: level, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "inherit",
    }).output();
    assert.ok(success);
    return new TextDecoder().decode(stdout).trim().split("\n").map((l) => JSON.parse(l));
  };
  const debug = await run("debug");
  assert.deepEqual(debug.map((l) => [l.level, l.msg, l.token]), [
    ["debug", "dbg", "[redacted]"],
    ["info", "inf", undefined],
  ]);
  const info = await run("");
  assert.deepEqual(info.map((l) => l.msg), ["inf"]);
});
