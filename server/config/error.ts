/** The one error a configuration problem raises. */
import { ProblemError } from "../../protocol/errors.ts";

/** A configuration that cannot be used; `problems` lists each wrong value on its own. */
export class ConfigError extends ProblemError {
  readonly problems: string[];
  constructor(problems: string | string[]) {
    const list = typeof problems === "string" ? [problems] : problems;
    super(
      "Invalid Configuration",
      500,
      list.length === 1
        ? list[0]
        : `${list.length} configuration problems:\n  ${list.join("\n  ")}`,
      { fatal: true },
    );
    this.name = "ConfigError";
    this.problems = list;
  }
}
