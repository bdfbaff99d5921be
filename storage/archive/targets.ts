/**
 * Archive targets: where archived key events go. A directory (the default for the embedded
 * set-up) or an S3-compatible bucket reached with path-style requests signed by aws4fetch
 * (AWS Signature V4; works with AWS S3, MinIO, Ceph RGW, Garage, s3rver).
 *
 * Object names are relative, `/`-separated, of [A-Za-z0-9._-] segments; nothing else is
 * accepted, so a name can never leave the directory or the bucket prefix.
 */
import { AwsClient } from "aws4fetch";
import { dirname, join } from "node:path";
import { StorageFailure } from "../errors.ts";

/** Where archived objects live. */
export interface ArchiveTarget {
  /** The target's identity without secrets: `dir:/abs/path` or `s3://bucket/prefix@endpoint`. */
  readonly id: string;
  /** Stores an object (replacing it); resolves once it is durable. */
  put(name: string, bytes: Uint8Array, contentType: string): Promise<void>;
  /** An object's bytes, or null when there is none. */
  get(name: string): Promise<Uint8Array | null>;
  /** Every object name under a prefix, sorted. */
  list(prefix: string): Promise<string[]>;
}

/** How `[retention] archive` is configured. */
export type ArchiveTargetConfig =
  | { kind: "dir"; path: string }
  | {
    kind: "s3";
    bucket: string;
    /** Key prefix inside the bucket ("" or ending in "/"). */
    prefix: string;
    endpoint: string;
    region: string;
    accessKeyId: string;
    secretAccessKey: string;
  };

/** An archive target that failed (unreachable, refused, malformed answer). */
export class ArchiveFailure extends StorageFailure {}

const NAME_RE = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

function checkName(name: string): string {
  if (!NAME_RE.test(name) || name.split("/").some((s) => s === "." || s === "..")) {
    throw new ArchiveFailure(`invalid archive object name ${JSON.stringify(name)}`);
  }
  return name;
}

/** Opens the configured target. */
export function openArchiveTarget(config: ArchiveTargetConfig): ArchiveTarget {
  return config.kind === "dir" ? new DirTarget(config.path) : new S3Target(config);
}

/** Objects as files under a directory; writes go to a temporary file, are synced, renamed. */
export class DirTarget implements ArchiveTarget {
  readonly id: string;
  constructor(readonly root: string) {
    this.id = `dir:${root}`;
  }

  async put(name: string, bytes: Uint8Array): Promise<void> {
    const file = join(this.root, checkName(name));
    const temp = `${file}.${crypto.randomUUID()}.tmp`;
    try {
      await Deno.mkdir(dirname(file), { recursive: true });
      const f = await Deno.open(temp, { write: true, createNew: true, mode: 0o640 });
      try {
        let written = 0;
        while (written < bytes.length) written += await f.write(bytes.subarray(written));
        await f.sync();
      } finally {
        f.close();
      }
      await Deno.rename(temp, file);
    } catch (err) {
      await Deno.remove(temp).catch(() => {});
      throw new ArchiveFailure(`cannot write ${file}: ${(err as Error).message}`, { cause: err });
    }
  }

  async get(name: string): Promise<Uint8Array | null> {
    const file = join(this.root, checkName(name));
    try {
      return await Deno.readFile(file);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw new ArchiveFailure(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
    }
  }

  async list(prefix: string): Promise<string[]> {
    const base = prefix.replace(/\/+$/, "");
    const dir = join(this.root, checkName(base));
    const names: string[] = [];
    try {
      for await (const entry of Deno.readDir(dir)) {
        if (entry.isFile && !entry.name.endsWith(".tmp")) names.push(`${base}/${entry.name}`);
      }
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return [];
      throw new ArchiveFailure(`cannot list ${dir}: ${(err as Error).message}`, { cause: err });
    }
    return names.sort();
  }
}

/** The text of the first `<tag>` in an S3 XML answer (entities decoded), for error messages. */
function xmlText(xml: string, tag: string): string | null {
  const m = new RegExp(`<${tag}>([^<]*)</${tag}>`).exec(xml);
  return m ? decodeXml(m[1]) : null;
}

function decodeXml(text: string): string {
  return text.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-fA-F]+);/g, (_, e: string) => {
    switch (e) {
      case "lt":
        return "<";
      case "gt":
        return ">";
      case "amp":
        return "&";
      case "quot":
        return '"';
      case "apos":
        return "'";
    }
    return String.fromCodePoint(e[1] === "x" ? parseInt(e.slice(2), 16) : parseInt(e.slice(1)));
  });
}

/** Objects in an S3-compatible bucket (path-style URLs: endpoint/bucket/prefix+name). */
export class S3Target implements ArchiveTarget {
  readonly id: string;
  readonly #client: AwsClient;
  readonly #base: string;
  readonly #prefix: string;

  constructor(config: Extract<ArchiveTargetConfig, { kind: "s3" }>) {
    const endpoint = config.endpoint.replace(/\/+$/, "");
    this.#prefix = config.prefix;
    this.id = `s3://${config.bucket}/${config.prefix}@${endpoint}`;
    this.#base = `${endpoint}/${encodeURIComponent(config.bucket)}`;
    this.#client = new AwsClient({
      accessKeyId: config.accessKeyId,
      secretAccessKey: config.secretAccessKey,
      service: "s3",
      region: config.region,
      retries: 2,
    });
  }

  #url(name: string): string {
    const key = this.#prefix + checkName(name);
    return `${this.#base}/${key.split("/").map(encodeURIComponent).join("/")}`;
  }

  async #fetch(what: string, url: string, init: RequestInit): Promise<Response> {
    try {
      return await this.#client.fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
    } catch (err) {
      throw new ArchiveFailure(`${what}: ${(err as Error).message}`, { cause: err });
    }
  }

  async #refuse(what: string, res: Response): Promise<never> {
    const body = await res.text().catch(() => "");
    const code = xmlText(body, "Code");
    const message = xmlText(body, "Message");
    throw new ArchiveFailure(
      `${what}: HTTP ${res.status}${code ? ` ${code}` : ""}${message ? `: ${message}` : ""}`,
    );
  }

  async put(name: string, bytes: Uint8Array, contentType: string): Promise<void> {
    const what = `cannot store ${name} in ${this.id}`;
    const res = await this.#fetch(what, this.#url(name), {
      method: "PUT",
      body: bytes as Uint8Array<ArrayBuffer>,
      headers: { "content-type": contentType },
    });
    if (!res.ok) await this.#refuse(what, res);
    await res.body?.cancel();
  }

  async get(name: string): Promise<Uint8Array | null> {
    const what = `cannot read ${name} from ${this.id}`;
    const res = await this.#fetch(what, this.#url(name), { method: "GET" });
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    if (!res.ok) await this.#refuse(what, res);
    return new Uint8Array(await res.arrayBuffer());
  }

  async list(prefix: string): Promise<string[]> {
    const what = `cannot list ${prefix} in ${this.id}`;
    const full = this.#prefix + checkName(prefix.replace(/\/+$/, "")) + "/";
    const names: string[] = [];
    let token: string | null = null;
    for (let page = 0; page < 10_000; page++) {
      const url = new URL(this.#base);
      url.searchParams.set("list-type", "2");
      url.searchParams.set("prefix", full);
      if (token) url.searchParams.set("continuation-token", token);
      const res = await this.#fetch(what, url.toString(), { method: "GET" });
      if (!res.ok) await this.#refuse(what, res);
      const xml = await res.text();
      for (const m of xml.matchAll(/<Key>([^<]*)<\/Key>/g)) {
        names.push(decodeXml(m[1]).slice(this.#prefix.length));
      }
      token = xmlText(xml, "IsTruncated") === "true" ? xmlText(xml, "NextContinuationToken") : null;
      if (!token) return names.sort();
    }
    throw new ArchiveFailure(`${what}: too many pages`);
  }
}
