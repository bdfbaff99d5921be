/** Timing helpers shared by the benchmarks (figures are printed, never asserted). */

/** The median of `values` (the upper one of an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Median milliseconds per call of `fn` over `repetitions` samples. Each sample repeats `fn`
 * until it spans at least `minSampleMs`, so timer resolution does not swamp the small cases;
 * the calibration run doubles as a warm-up.
 */
export function msPerCall(
  fn: () => void,
  options: { repetitions: number; minSampleMs: number },
): number {
  let inner = 1;
  for (;;) {
    const start = performance.now();
    for (let i = 0; i < inner; i++) fn();
    if (performance.now() - start >= options.minSampleMs || inner >= 1 << 16) break;
    inner *= 2;
  }
  const samples: number[] = [];
  for (let r = 0; r < options.repetitions; r++) {
    const start = performance.now();
    for (let i = 0; i < inner; i++) fn();
    samples.push((performance.now() - start) / inner);
  }
  return median(samples);
}
