/**
 * The browser bundles build from the current sources and carry no platform imports: no
 * `node:` module and no Deno-only transport is loaded by the web chat or the browser SDK.
 */
import assert from "node:assert/strict";
import { bundled, BUNDLES } from "../../web/bundle.ts";

Deno.test("the browser bundles build and import nothing platform-specific", async () => {
  for (const name of Object.keys(BUNDLES)) {
    const code = new TextDecoder().decode(await bundled(name)!);
    assert.ok(code.length > 10_000, `${name} is a real bundle`);
    // An import of a node: module or of the Deno transports would break in a browser.
    assert.doesNotMatch(code, /\bfrom\s*["']node:/, `${name} imports a node: module`);
    assert.doesNotMatch(code, /\bimport\s*\(\s*["']node:/, `${name} imports a node: module`);
    assert.doesNotMatch(code, /Deno\.connect\b/, `${name} contains the Deno transports`);
  }
  assert.equal(bundled("nope.js"), null);
});
