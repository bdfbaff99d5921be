/** The admin web console: mount it with `startConsole`, or test it with `createConsoleApp`. */
export { buildConsole, createConsoleApp, startConsole } from "./server.ts";
export type { ConsoleApp, RunningConsole } from "./server.ts";
export type { ConsoleContext, ConsoleLogger } from "./context.ts";
export type { ConsoleFigures, FigureSample, FiguresSource } from "./figures.ts";
export { ConsoleConfigError } from "./auth.ts";
