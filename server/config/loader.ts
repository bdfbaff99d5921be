/**
 * Loads the one typed, validated configuration object.
 *
 * Sources, lowest to highest precedence: built-in defaults, `commucat.toml` (the file named by
 * COMMUCAT_CONFIG, else `./commucat.toml` when present), then `COMMUCAT_*` environment variables.
 * Every wrong value is reported with its key, where it came from and what was expected; all
 * problems are collected and reported together so an operator fixes them in one pass.
 *
 * @module
 */
import { parse as parseToml } from "smol-toml";
import { isAbsolute, join, resolve } from "node:path";
import { publicKeyOf } from "../../protocol/crypto.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { ConfigError } from "./error.ts";
import { completeKeys } from "./keyfile.ts";
import {
  describeValue,
  Expected,
  Invalid,
  isTable,
  type ParseContext,
  parsePath,
} from "./parsers.ts";
import {
  ADMIN_KEYS,
  closest,
  CRYPTO_KEYS,
  FEDERATION_KEYS,
  type KeySpec,
  LEDGER_KEYS,
  LIMITS_KEYS,
  RETENTION_KEYS,
  S3_KEYS,
  type Section,
  SECTIONS,
  SERVER_KEYS,
  STORAGE_KEYS,
} from "./registry.ts";
import type { Config, RetentionConfig } from "./types.ts";

export interface LoadConfigOptions {
  /** Environment to read (default: the process environment). */
  env?: Record<string, string | undefined>;
  /** TOML file: a path, `null` for none, or omitted for COMMUCAT_CONFIG / ./commucat.toml. */
  file?: string | null;
  /** Directory relative paths are resolved against (default: the working directory). */
  cwd?: string;
}

/** A raw value and a human description of where it came from. */
interface Raw {
  value: unknown;
  /** e.g. `[server] keepalive in ./commucat.toml` or `COMMUCAT_KEEPALIVE (environment)` */
  where: string;
}

/** Reads keys from the environment over the file, collecting a problem per wrong value. */
class Reader {
  readonly problems: string[] = [];

  constructor(
    private readonly env: Record<string, string | undefined>,
    private readonly table: Record<string, unknown> | null,
    private readonly display: string,
  ) {}

  /** The raw value of `spec` and where it came from, or undefined when it is not set. */
  raw(spec: KeySpec<unknown>): Raw | undefined {
    const fromEnv = this.env[spec.env];
    if (fromEnv !== undefined && fromEnv !== "") {
      return { value: fromEnv, where: `${spec.env} (environment)` };
    }
    const sectionTable = this.table?.[spec.section];
    if (isTable(sectionTable) && spec.key in sectionTable) {
      const value = sectionTable[spec.key];
      // An empty string in the file means "not set", as in the environment.
      if (value === "") return undefined;
      return { value, where: `[${spec.section}] ${spec.key} in ${this.display}` };
    }
    return undefined;
  }

  /** Where `spec` was set, or undefined. */
  where(spec: KeySpec<unknown>): string | undefined {
    return this.raw(spec)?.where;
  }

  /** The value of `spec`; a wrong one is noted as a problem and its unset value used. */
  value<T>(spec: KeySpec<T>, ctx: ParseContext): T {
    const unset = () => "unset" in spec ? spec.unset as T : spec.parse(spec.default, ctx);
    const found = this.raw(spec);
    if (!found) return unset();
    try {
      return spec.parse(found.value, ctx);
    } catch (err) {
      if (!(err instanceof Expected)) throw err;
      const shown = err.showValue && !spec.secret ? `, got ${describeValue(found.value)}` : "";
      const body = err instanceof Invalid ? err.expected : `expected ${err.expected}${shown}`;
      this.problems.push(`invalid ${found.where}: ${body}`);
      return unset();
    }
  }

  /** Every key of a section, as the object the section's fields describe. */
  section<S>(keys: Section<S>, ctx: ParseContext): S {
    const out = {} as S;
    for (const field of Object.keys(keys) as (keyof S)[]) {
      out[field] = this.value(keys[field], ctx);
    }
    return out;
  }

  /** Notes a problem when exactly one of two keys that go together is set. */
  together(a: KeySpec<unknown>, b: KeySpec<unknown>, values: [unknown, unknown], fix: string) {
    if ((values[0] === null) === (values[1] === null)) return;
    const [set, missing] = values[0] !== null ? [a, b] : [b, a];
    this.problems.push(
      `[${set.section}] ${set.key} is set (${this.where(set)}) but ` +
        `[${missing.section}] ${missing.key} is not: ${fix}`,
    );
  }
}

/**
 * Loads, validates and completes the configuration. With no Noise key or federation seed
 * configured, generates the missing ones once into `<data_dir>/keys.json` (mode 0600) and
 * reuses them on later starts. Throws ConfigError listing every problem found.
 */
export async function loadConfig(options: LoadConfigOptions = {}): Promise<Config> {
  const env = options.env ?? Deno.env.toObject();
  const cwd = options.cwd ?? Deno.cwd();

  const { table, source, display } = await readConfigFile(options.file, env, cwd);
  const read = new Reader(env, table, display);
  const problems = read.problems;
  if (table) problems.push(...checkKnownKeys(table, display));
  const ctx: ParseContext = { cwd, domain: "" };

  const server = read.section(SERVER_KEYS, ctx);
  ctx.domain = server.domain; // no [federation] peer may claim it
  read.together(
    SERVER_KEYS.tlsCert,
    SERVER_KEYS.tlsKey,
    [server.tlsCert, server.tlsKey],
    "set both or neither",
  );
  const tlsFiles = [[SERVER_KEYS.tlsCert, server.tlsCert], [SERVER_KEYS.tlsKey, server.tlsKey]];
  for (const [spec, file] of tlsFiles as [KeySpec<unknown>, string | null][]) {
    const problem = file ? await checkReadableFile(file) : null;
    if (problem) problems.push(`invalid ${read.where(spec)}: ${problem}`);
  }

  const storage = read.section(STORAGE_KEYS, ctx);

  const crypto = read.section(CRYPTO_KEYS, ctx);
  read.together(
    CRYPTO_KEYS.noisePrevious,
    CRYPTO_KEYS.noisePreviousNotAfter,
    [crypto.noisePrevious, crypto.noisePreviousNotAfter],
    "the previous key needs the end of its grace window, and the other way round",
  );
  const { noisePrivate, noisePublic } = crypto;
  if (noisePublic && noisePrivate) {
    const derived = bytesToHex(publicKeyOf(noisePrivate));
    if (derived !== bytesToHex(noisePublic)) {
      problems.push(
        `[crypto] noise_public (${read.where(CRYPTO_KEYS.noisePublic)}) is not the X25519 ` +
          `public key of [crypto] noise_private (${read.where(CRYPTO_KEYS.noisePrivate)}): the ` +
          `public key for that private key is ${derived} — set noise_public to it or remove it`,
      );
    }
  } else if (noisePublic && !noisePrivate && !problems.some((p) => p.includes("noise_private"))) {
    problems.push(
      `[crypto] noise_public is set (${read.where(CRYPTO_KEYS.noisePublic)}) without ` +
        "[crypto] noise_private: set both, or neither to use generated keys",
    );
  }

  const federation = read.section(FEDERATION_KEYS, ctx);

  const ledger = read.section(LEDGER_KEYS, ctx);
  if (ledger.mode === "file" && !ledger.target) {
    problems.push(
      `[ledger] mode is "file" (${read.where(LEDGER_KEYS.mode)}) but [ledger] target is not ` +
        "set: give the ledger file path in [ledger] target or COMMUCAT_LEDGER_TARGET",
    );
  }

  const limits = read.section(LIMITS_KEYS, ctx);
  const admin = read.section(ADMIN_KEYS, ctx);
  const retention = readRetention(read, ctx, server.dataDir);

  if (problems.length > 0) throw new ConfigError(problems);

  const keys = await completeKeys(server.dataDir, noisePrivate, crypto.federationSeed);
  return {
    source,
    server,
    storage,
    crypto: {
      noisePrivate: keys.noisePrivate,
      noisePublic: publicKeyOf(keys.noisePrivate),
      federationSeed: keys.federationSeed,
      noiseNext: crypto.noiseNext,
      noisePrevious: crypto.noisePrevious,
      noisePreviousNotAfter: crypto.noisePreviousNotAfter,
      prologue: crypto.prologue,
      generatedKeyFile: keys.file,
      keysGeneratedNow: keys.generated,
    },
    federation,
    ledger,
    limits,
    retention,
    admin,
  };
}

/** `[retention]`: the archive target (a directory, or an S3 bucket) and the job's knobs. */
function readRetention(read: Reader, ctx: ParseContext, dataDir: string): RetentionConfig {
  const { archive: archiveText, ...knobs } = read.section(RETENTION_KEYS, ctx);
  const fallback: RetentionConfig = {
    ...knobs,
    archive: { kind: "dir", path: join(dataDir, "archive") },
  };
  if (archiveText === null) return fallback;
  if (!archiveText.startsWith("s3://")) {
    return { ...knobs, archive: { kind: "dir", path: parsePath(archiveText, ctx) } };
  }
  const where = read.where(RETENTION_KEYS.archive);
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(archiveText);
  const prefix = (m?.[2] ?? "").replace(/^\/+|\/+$/g, "");
  if (!m || (prefix !== "" && !/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(prefix))) {
    read.problems.push(
      `invalid ${where}: expected s3://bucket[/prefix] with a bucket of 3-63 lowercase ` +
        "letters, digits, dots or hyphens and a prefix of A-Z a-z 0-9 . _ - /",
    );
    return fallback;
  }
  const s3 = read.section(S3_KEYS, ctx);
  const { s3Endpoint: endpoint, s3AccessKeyId: accessKeyId, s3SecretAccessKey: secret } = s3;
  const missing = [S3_KEYS.s3Endpoint, S3_KEYS.s3AccessKeyId, S3_KEYS.s3SecretAccessKey]
    .filter((spec, i) => [endpoint, accessKeyId, secret][i] === null && !read.where(spec))
    .map((spec) => `[retention] ${spec.key}`);
  if (missing.length > 0) {
    read.problems.push(
      `[retention] archive is an S3 bucket (${where}) but ${missing.join(", ")} ` +
        `${missing.length === 1 ? "is" : "are"} not set`,
    );
  }
  if (endpoint === null || accessKeyId === null || secret === null) return fallback;
  return {
    ...knobs,
    archive: {
      kind: "s3",
      bucket: m[1],
      prefix: prefix === "" ? "" : `${prefix}/`,
      endpoint,
      region: s3.s3Region,
      accessKeyId,
      secretAccessKey: secret,
    },
  };
}

async function readConfigFile(
  file: string | null | undefined,
  env: Record<string, string | undefined>,
  cwd: string,
): Promise<{ table: Record<string, unknown> | null; source: string | null; display: string }> {
  if (file === null) return { table: null, source: null, display: "" };
  // A file named by the caller or by COMMUCAT_CONFIG must exist; ./commucat.toml need not.
  const named = file !== undefined ? file : env.COMMUCAT_CONFIG || null;
  const display = named ?? "./commucat.toml";
  const fullPath = isAbsolute(display) ? display : resolve(cwd, display);
  let text: string;
  try {
    text = await Deno.readTextFile(fullPath);
  } catch (err) {
    if (named === null && err instanceof Deno.errors.NotFound) {
      return { table: null, source: null, display };
    }
    const from = file !== undefined ? "" : " (COMMUCAT_CONFIG)";
    throw new ConfigError(`cannot read config file ${display}${from}: ${(err as Error).message}`);
  }
  try {
    return { table: parseToml(text) as Record<string, unknown>, source: fullPath, display };
  } catch (err) {
    throw new ConfigError(`cannot parse config file ${display}: ${(err as Error).message}`);
  }
}

function checkKnownKeys(table: Record<string, unknown>, display: string): string[] {
  const problems: string[] = [];
  const sections = Object.keys(SECTIONS);
  for (const [section, value] of Object.entries(table)) {
    const keys = SECTIONS[section];
    if (!keys) {
      problems.push(
        `unknown ${isTable(value) ? "section" : "key"} "${section}" in ${display}` +
          suggest(section, sections) + `; known sections: ${sections.join(", ")}`,
      );
      continue;
    }
    if (!isTable(value)) {
      problems.push(`invalid [${section}] in ${display}: expected a table ([${section}] section)`);
      continue;
    }
    for (const key of Object.keys(value)) {
      if (!keys.includes(key)) {
        problems.push(
          `unknown key "${key}" in [${section}] of ${display}` + suggest(key, keys) +
            `; known keys: ${keys.join(", ")}`,
        );
      }
    }
  }
  return problems;
}

function suggest(name: string, candidates: readonly string[]): string {
  const best = closest(name.toLowerCase(), candidates);
  return best ? ` (did you mean "${best}"?)` : "";
}

async function checkReadableFile(file: string): Promise<string | null> {
  try {
    const info = await Deno.stat(file);
    if (!info.isFile) return `${file} is not a file`;
    return null;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return `file not found: ${file}`;
    return `cannot read ${file}: ${(err as Error).message}`;
  }
}
