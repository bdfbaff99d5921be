/**
 * CCP-1 codec throughput: encode and decode 1 000 MSG frames with 16 B, 1 KiB and 64 KiB
 * payloads. Decoding feeds the stream in 64 KiB chunks, as a socket would, so frames that
 * span chunks pay their one copy. Each figure is the median of several repetitions;
 * MB/s counts wire octets (1 MB = 10^6 octets).
 */
import { encodeFrame, encodeFrames, type Frame, FrameDecoder, FrameType } from "../protocol/mod.ts";
import { msPerCall } from "./helpers/timing.ts";

const FRAMES = 1_000;
const REPETITIONS = 7;
const CHUNK = 64 * 1024;
const SIZES: Array<[string, number]> = [["16 B", 16], ["1 KiB", 1024], ["64 KiB", 64 * 1024]];

/** Median milliseconds per call of `fn` (bench/helpers/timing.ts). */
const time = (fn: () => void) => msPerCall(fn, { repetitions: REPETITIONS, minSampleMs: 20 });

function row(name: string, size: string, ms: number, octets: number): string {
  const fps = FRAMES / (ms / 1000);
  const mbps = octets / 1e6 / (ms / 1000);
  return `| ${name.padEnd(15)} | ${size.padStart(7)} | ${fps.toFixed(0).padStart(12)} | ` +
    `${mbps.toFixed(1).padStart(9)} |`;
}

/** Prints the codec table. */
export async function run(): Promise<void> {
  console.log(`\nCCP-1 codec: ${FRAMES} MSG frames, median of ${REPETITIONS} runs`);
  console.log("| operation       | payload |     frames/s |      MB/s |");
  console.log("|-----------------|---------|--------------|-----------|");
  let sink = 0;
  for (const [label, size] of SIZES) {
    const frames: Frame[] = Array.from({ length: FRAMES }, (_, i) => ({
      type: FrameType.Msg,
      channel: 1 + (i % 8),
      sequence: i,
      payload: new Uint8Array(size).fill(i & 0xff),
    }));
    const stream = encodeFrames(frames);
    const chunks: Uint8Array[] = [];
    for (let o = 0; o < stream.length; o += CHUNK) chunks.push(stream.subarray(o, o + CHUNK));

    const encodeMs = time(() => {
      for (const frame of frames) sink += encodeFrame(frame).length;
    });
    const batchMs = time(() => {
      sink += encodeFrames(frames).length;
    });
    const decodeMs = time(() => {
      const decoder = new FrameDecoder();
      let count = 0;
      for (const chunk of chunks) {
        decoder.push(chunk);
        for (let f = decoder.next(); f !== null; f = decoder.next()) count++;
      }
      if (count !== FRAMES) throw new Error(`decoded ${count} of ${FRAMES} frames`);
      sink += count;
    });
    console.log(row("encodeFrame", label, encodeMs, stream.length));
    console.log(row("encodeFrames", label, batchMs, stream.length));
    console.log(row("decode (64K rx)", label, decodeMs, stream.length));
    await Promise.resolve(); // let a caller's event loop breathe between sizes
  }
  if (sink < 0) console.log(sink); // keeps the work observable to the optimiser
}

if (import.meta.main) await run();
