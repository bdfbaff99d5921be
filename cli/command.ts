/** The shape every CLI command has; the registry in cli/mod.ts lists them all. */
import type { CliContext } from "./context.ts";

export interface Command {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** The usage line(s), without the `deno task cli` prefix. */
  usage: string;
  /** Full help text after the usage: what it does, options, an example. */
  help: string;
  /** Runs with the arguments after the command name; resolves to the exit code. */
  run(argv: string[], ctx: CliContext): Promise<number>;
}

/** The program name as operators type it. */
export const PROGRAM = "deno task cli";
