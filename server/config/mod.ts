/**
 * CommuCat's configuration: the typed object (types.ts), the keys it is read from
 * (registry.ts), their value parsers (parsers.ts), the loader (loader.ts) and the generated key
 * file (keyfile.ts). Importers use this module.
 *
 * @module
 */
export type { Config, LedgerMode, RetentionConfig, StaticPeer } from "./types.ts";
export { ConfigError } from "./error.ts";
export { loadConfig, type LoadConfigOptions } from "./loader.ts";
export {
  CONFIG_KEYS,
  type ConfigKey,
  OTHER_VARIABLES,
  unknownVariableWarnings,
} from "./registry.ts";
export { describeKeys, generateKeys, KEY_FILE_NAME } from "./keyfile.ts";
