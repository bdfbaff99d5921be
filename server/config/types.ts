/** The typed, validated CommuCat configuration (loader.ts builds it). */
import type { ArchiveTargetConfig } from "../../storage/archive/targets.ts";
import type { StaticPeer } from "../../storage/repos/federation.ts";
import type { LedgerMode } from "../../storage/ledger.ts";

/** `[retention]`: how long key events stay in the database and where they are archived. */
export interface RetentionConfig {
  /** Days a key event stays before it is archived and deleted; 0 keeps events forever. */
  keyEventsDays: number;
  /** The archive target: a directory (default data_dir/archive) or an S3-compatible bucket. */
  archive: ArchiveTargetConfig;
  /** Seconds between retention passes. */
  interval: number;
  /** Key events per archive chunk. */
  chunkEvents: number;
}

// One definition each, where storage needs them: a configured peer and the ledger's mode.
export type { StaticPeer } from "../../storage/repos/federation.ts";
export type { LedgerMode } from "../../storage/ledger.ts";

export interface Config {
  /** Path of the TOML file the values came from, or null when none was read. */
  source: string | null;
  server: {
    /** HTTP listener: /connect, /healthz, /readyz, /metrics, federation inbound. */
    bind: { hostname: string; port: number };
    /** Raw CCP-1 TCP (or TLS) listener. */
    tcpBind: { hostname: string; port: number };
    /** Admin console listener. */
    consoleBind: { hostname: string; port: number };
    tlsCert: string | null;
    tlsKey: string | null;
    domain: string;
    autoApproveDevices: boolean;
    /** Keepalive interval in seconds; idle connections are closed after it elapses. */
    keepalive: number;
    /** Directory for the embedded database and generated dev keys. */
    dataDir: string;
    /** Handshake timeout in seconds. */
    handshakeTimeout: number;
    /** Allow protocol v1 (no tunnel encryption) on non-TLS connections that are not loopback. */
    allowPlaintextV1: boolean;
    /** Origins (besides the listener's own) whose pages may open /connect as a WebSocket. */
    allowedOrigins: string[];
  };
  storage: {
    postgresDsn: string | null;
    redisUrl: string | null;
  };
  crypto: {
    /** X25519 static private key, 32 bytes. */
    noisePrivate: Uint8Array;
    /** X25519 public key derived from noisePrivate. */
    noisePublic: Uint8Array;
    /** The key that replaces noisePrivate next (announced and accepted), or null. */
    noiseNext?: Uint8Array | null;
    /** The key noisePrivate replaced, accepted until noisePreviousNotAfter, or null. */
    noisePrevious?: Uint8Array | null;
    noisePreviousNotAfter?: Date | null;
    /** Federation seed bytes (the Ed25519 secret is BLAKE3 of these). */
    federationSeed: Uint8Array;
    prologue: string;
    /** Where generated keys were kept, when they were generated or loaded from data_dir. */
    generatedKeyFile: string | null;
    /** True when this start generated (part of) the keys in generatedKeyFile. */
    keysGeneratedNow?: boolean;
  };
  federation: {
    peers: StaticPeer[];
  };
  ledger: {
    mode: LedgerMode;
    target: string | null;
  };
  limits: {
    /** Seconds a presence record lives in the ephemeral store. */
    presenceTtl: number;
    /** Seconds an envelope may wait in the relay queue before it is purged. */
    relayTtl: number;
    /** Frames a connection's outbound queue may hold before the reader counts as too slow. */
    outboundQueueFrames: number;
    /** Bytes a connection's outbound queue may hold before the reader counts as too slow. */
    outboundQueueBytes: number;
    /** Maximum unacknowledged frames per connection (replay window). */
    maxInflight: number;
    /** Handshakes one client address may start per minute (all nodes together) (default 300). */
    handshakesPerMinute: number;
    /** New users and devices one client address may register per hour (default 20). */
    registrationsPerHour: number;
    /** Frames one device may send per second (default 20000). */
    framesPerSecond: number;
    /** Bytes one device may send per second (32 MiB) (default 33554432). */
    bytesPerSecond: number;
    /** Messages one device may send to one recipient at once (leaky bucket size) (default 60). */
    messagesBurst: number;
    /** Messages per minute that bucket drains (1 per second) (default 60). */
    messagesPerMinute: number;
    /** JOINs one device may send per minute (default 60). */
    joinsPerMinute: number;
    /** Wrong console tokens one address may try per hour (the right token always works) (default 20). */
    signInFailuresPerHour: number;
    /** Connections one address may hold open before their handshake completed (per node) (default 64). */
    unauthenticatedPerAddress: number;
    /** Connections a node holds open before their handshake completed (default 2048). */
    unauthenticatedTotal: number;
    /** Resident bytes above which a node refuses new connections (2 GiB) (default 2147483648). */
    memoryBudget: number;
    /** HTTP connections one address may hold open (per node) (default 256). */
    httpConnectionsPerAddress: number;
    /** HTTP connections a node holds open (default 8192). */
    httpConnectionsTotal: number;
    /** Seconds an HTTP client has to send its request headers (default 10). */
    httpHeaderTimeout: number;
    /** Seconds an HTTP request body may stay silent (federation: to arrive in full) (default 30). */
    httpBodyTimeout: number;
    /** Channel ids a device may bind to conversations at once (ccp1.md §4.1). */
    maxConversationsPerDevice: number;
    /** Devices one JOIN may list, the joiner included. */
    maxMembersPerJoin: number;
    /** Devices (pending or active) one user may hold, unless an operator set its own (default 8). */
    maxDevicesPerUser: number;
    /** Pairing codes one user, and one client address, may ask for per hour (default 10). */
    pairingCodesPerHour: number;
    /** Handshakes with a pairing code one client address may start per hour (default 20). */
    pairingAttemptsPerHour: number;
    /** Seconds a conversation route lives without use or a connected member. */
    routeIdleTtl: number;
    /** Presence copies one announcement may send. */
    presenceFanout: number;
    /** Milliseconds a live copy may wait for its recipient's ACK before it is queued (§5). */
    liveAckTimeoutMs: number;
  };
  retention: RetentionConfig;
  admin: {
    token: string | null;
  };
}
