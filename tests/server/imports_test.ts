/**
 * The shape of server/ (architecture.md): no import cycle among its modules (type-only imports
 * included: a cycle of types is a cycle of knowledge) and no import of console/ — the entry
 * points wire the server and the console together.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const SERVER = join(ROOT, "server");
const IMPORT =
  /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"|(?:^|\n)\s*import\s+"([^"]+)"/g;

async function* tsFiles(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* tsFiles(path);
    else if (/\.tsx?$/.test(entry.name)) yield path;
  }
}

/** server/ module → the relative modules it imports (resolved paths). */
async function importGraph(): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  for await (const file of tsFiles(SERVER)) {
    const text = await Deno.readTextFile(file);
    const targets: string[] = [];
    for (const m of text.matchAll(IMPORT)) {
      const spec = m[1] ?? m[2];
      if (spec.startsWith(".")) targets.push(resolve(dirname(file), spec));
    }
    graph.set(file, targets);
  }
  return graph;
}

/** Every cycle found by a depth-first search, as module paths relative to the root. */
function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (node: string) => {
    state.set(node, "open");
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (!graph.has(next)) continue; // outside server/
      if (state.get(next) === "open") {
        found.push(stack.slice(stack.indexOf(next)).concat(next).map((p) => relative(ROOT, p)));
      } else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(node, "done");
  };
  for (const node of graph.keys()) if (!state.has(node)) visit(node);
  return found;
}

Deno.test("server/ has no import cycle", async () => {
  const found = cycles(await importGraph());
  assert.deepEqual(found.map((c) => c.join(" → ")), []);
});

Deno.test("server/ never imports console/", async () => {
  const consoleDir = join(ROOT, "console") + "/";
  const offenders: string[] = [];
  for (const [file, targets] of await importGraph()) {
    for (const t of targets) {
      if (t.startsWith(consoleDir)) {
        offenders.push(`${relative(ROOT, file)} → ${relative(ROOT, t)}`);
      }
    }
  }
  assert.deepEqual(offenders, []);
});

Deno.test("the cycle finder finds a cycle", () => {
  const graph = new Map([["/a", ["/b"]], ["/b", ["/c"]], ["/c", ["/a"]], ["/d", ["/a"]]]);
  assert.equal(cycles(graph).length, 1);
});
