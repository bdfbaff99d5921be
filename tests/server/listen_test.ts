/** A listener that cannot open names its address and setting. */
import assert from "node:assert/strict";
import { listenOn } from "../../server/listen.ts";
import { startConsole } from "../../console/server.ts";
import { testConfig } from "../console/helpers.ts";
import { fakeStorage } from "../console/fake_storage.ts";

Deno.test("an address in use is named, with the setting to change", async () => {
  const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (held.addr as Deno.NetAddr).port;
  try {
    assert.throws(
      () =>
        listenOn(
          { setting: "tcp_bind", hostname: "127.0.0.1", port },
          () => Deno.listen({ hostname: "127.0.0.1", port }),
        ),
      new RegExp(
        `^Error: cannot listen on 127\\.0\\.0\\.1:${port} \\(tcp_bind\\): the address is ` +
          `already in use .* set tcp_bind to a free port$`,
      ),
    );
    const config = testConfig({ server: { consoleBind: { hostname: "127.0.0.1", port } } });
    await assert.rejects(
      startConsole({ config, storage: fakeStorage(Date.now), nodeId: "n" }),
      new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} \\(console_bind\\)`),
    );
  } finally {
    held.close();
  }
});
