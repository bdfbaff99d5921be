/**
 * The identifier grammar of protocol/ids.ts, and that every layer applies the same one: the
 * codec (HELLO), storage's validators, the console's peer form, the CLI's key argument, config
 * and the SDK's connect options.
 */
import assert from "node:assert/strict";
import {
  HANDLE_PATTERN,
  ID_PATTERN,
  isChannelId,
  isDomain,
  isHandle,
  isId,
  isStoredId,
  parseKeyText,
  parseMember,
  toDomain,
} from "../../protocol/ids.ts";
import { parseHello, ProtocolError } from "../../protocol/mod.ts";
import * as v from "../../storage/repos/validate.ts";
import { InvalidValue } from "../../storage/errors.ts";
import { parsePeerForm } from "../../console/validate.ts";
import { hexKey, UsageError } from "../../cli/args.ts";
import { connect } from "../../client/sdk.ts";

const GOOD_IDS = [
  "alice",
  "alice+phone",
  "a",
  "A1",
  "bob@chat.example.org",
  "node:1",
  "x_y-z.w",
  "0".repeat(128),
  "3f2a6c1e-0000-4000-8000-000000000000",
];
const BAD_IDS = [
  "",
  ".alice",
  "-alice",
  "_alice",
  ":alice",
  "@alice",
  "+alice",
  "has space",
  "a/b",
  "a".repeat(129),
  "ünï",
  "a\u0000b",
];

const KEY_HEX = "0f".repeat(32);

function hello(deviceId: string, user?: Record<string, unknown>) {
  return {
    pattern: "XK",
    device_id: deviceId,
    client_static: KEY_HEX,
    handshake: "00",
    ...(user ? { user } : {}),
  };
}

Deno.test("ids: one grammar; `+` allowed, a leading dot (or other mark) refused", () => {
  for (const id of GOOD_IDS) assert.ok(isId(id), id);
  for (const id of BAD_IDS) assert.ok(!isId(id), JSON.stringify(id));
  assert.ok(!isId(42) && !isId(null) && !isId(undefined));
  assert.equal(ID_PATTERN.source, "^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$");
});

Deno.test("ids: codec, storage and SDK agree on every id", async () => {
  for (const id of [...GOOD_IDS, ...BAD_IDS]) {
    const codec = (() => {
      try {
        parseHello(hello(id));
        return true;
      } catch (err) {
        assert.ok(err instanceof ProtocolError);
        assert.match(err.detail, /HELLO\.device_id: expected an id of 1 to 128/);
        return false;
      }
    })();
    const stored = (() => {
      try {
        v.newId("device id", id);
        return true;
      } catch (err) {
        assert.ok(err instanceof InvalidValue);
        return false;
      }
    })();
    assert.equal(codec, isId(id), `codec on ${JSON.stringify(id)}`);
    assert.equal(stored, isId(id), `storage on ${JSON.stringify(id)}`);
    if (!isId(id)) {
      await assert.rejects(
        connect({ port: 1, deviceId: id } as never),
        (err) => err instanceof TypeError && /deviceId .* must be 1 to 128/.test(err.message),
      );
    }
  }
});

Deno.test("ids: rows stored under the earlier rule stay reachable, never created anew", () => {
  assert.equal(v.id("device id", ".alice"), ".alice");
  assert.ok(isStoredId("-legacy") && isStoredId("alice+phone"));
  assert.throws(() => v.newId("device id", ".alice"), InvalidValue);
  assert.throws(() => v.id("device id", "has space"), InvalidValue);
  assert.throws(() => v.id("device id", "a".repeat(129)), InvalidValue);
  assert.equal(v.storedHandle(".alice"), ".alice");
  assert.throws(() => v.handle(".alice"), /handle/);
});

Deno.test("ids: handles — any script, a letter or digit first; HELLO checks them too", () => {
  for (const h of ["alice", "Алиса", "猫", "a.b_c-d", "x".repeat(64), "1st"]) {
    assert.ok(isHandle(h), h);
    assert.equal(parseHello(hello("dev", { handle: h })).user?.handle, h);
  }
  for (const h of [".alice", "-a", "_a", "", "x".repeat(65), "has space", "a+b", "a@b"]) {
    assert.ok(!isHandle(h), h);
    assert.throws(() => parseHello(hello("dev", { handle: h })), /HELLO\.user\.handle: expected/);
    assert.throws(() => v.handle(h), InvalidValue);
  }
  assert.throws(() => parseHello(hello("dev", { id: ".u" })), /HELLO\.user\.id: expected an id/);
  assert.equal(HANDLE_PATTERN.flags, "u");
});

Deno.test("ids: domains — one DNS-name rule for federation, storage, config and console", () => {
  for (const d of ["chat.example.org", "localhost", "a-b.c0", "x".repeat(63) + ".org"]) {
    assert.ok(isDomain(d), d);
    assert.equal(v.domain(d.toUpperCase()), d);
    const form = parsePeerForm(
      { domain: d.toUpperCase(), endpoint: "https://x.example/f", publicKey: KEY_HEX, status: "" },
      new Set(),
    );
    assert.equal(form.peer?.domain, d, JSON.stringify(form.errors));
  }
  for (const d of ["", "-a.org", "a-.org", "a..org", ".org", "a_b.org", "x".repeat(64) + ".org"]) {
    assert.ok(!isDomain(d), d);
    assert.equal(toDomain(d), null);
    assert.throws(() => v.domain(d), InvalidValue);
    const form = parsePeerForm(
      { domain: d, endpoint: "https://x.example/f", publicKey: KEY_HEX, status: "" },
      new Set(),
    );
    assert.match(form.errors.domain ?? "", /Domain must be a DNS name/);
  }
  assert.ok(!isDomain("Chat.Example.org"), "domains compare in lower case");
  assert.equal(toDomain("Chat.Example.org"), "chat.example.org");
  assert.ok(!isDomain(("a".repeat(60) + ".").repeat(5) + "org"), "at most 253 characters");
});

Deno.test("ids: member addresses split at the last @", () => {
  assert.deepEqual(parseMember("bob"), { device: "bob", domain: null });
  assert.deepEqual(parseMember("bob@Chat.Example.org"), {
    device: "bob",
    domain: "chat.example.org",
  });
  assert.deepEqual(parseMember("a@b@c.org"), { device: "a@b", domain: "c.org" });
  assert.equal(parseMember("bob@"), null);
  assert.equal(parseMember("@c.org"), null);
  assert.equal(parseMember(""), null);
});

Deno.test("ids: channel ids are 0..2^32-1", () => {
  for (const c of [0, 1, 0xffffffff]) assert.ok(isChannelId(c));
  for (const c of [-1, 0x100000000, 1.5, NaN, "1"]) assert.ok(!isChannelId(c));
});

Deno.test("ids: keys — 64 hex digits or base64, the same for console and CLI", () => {
  const bytes = new Uint8Array(32).fill(0x0f);
  const b64 = btoa(String.fromCharCode(...bytes));
  const b64url = b64.replace(/\+/g, "-").replace(/\//g, "_").replace(/=$/, "");
  for (const text of [KEY_HEX, KEY_HEX.toUpperCase(), ` ${KEY_HEX}\n`, b64, b64url]) {
    assert.deepEqual(parseKeyText(text), bytes, text);
    assert.deepEqual(hexKey("hexkey", text, "usage"), bytes);
  }
  for (const text of ["", "zz", KEY_HEX.slice(2), KEY_HEX + "00", "!".repeat(43)]) {
    assert.equal(parseKeyText(text), null, text);
    assert.throws(() => hexKey("hexkey", text, "usage"), UsageError);
  }
  assert.equal(parseKeyText(42), null);
});
