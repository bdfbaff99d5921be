/**
 * Upper bounds (ms) of the delivery latency histogram slots shared by the relay (which counts)
 * and the readers (which compute percentiles); slot `length` counts latencies above them all.
 * Changing them changes the meaning of stored slots: append only.
 */
export const LATENCY_BOUNDS_MS: readonly number[] = [
  5,
  10,
  25,
  50,
  100,
  250,
  500,
  1_000,
  2_500,
  5_000,
  10_000,
  30_000,
  60_000,
  300_000,
  900_000,
  3_600_000,
  21_600_000,
  86_400_000,
  604_800_000,
];
