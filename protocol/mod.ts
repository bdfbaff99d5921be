/**
 * CCP-1 protocol: pure code shared by the server, the client SDK and the tests.
 *
 * @module
 */

export * from "./errors.ts";
export * from "./varint.ts";
export * from "./hex.ts";
export * from "./ids.ts";
export * from "./frame.ts";
export * from "./control.ts";
export * from "./noise.ts";
export * from "./secure_stream.ts";
export * from "./federation.ts";
