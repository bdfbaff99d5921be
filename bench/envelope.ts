/**
 * Sealed envelope throughput (protocol/envelope.ts): seal and open for 1 KiB and 64 KiB bodies
 * with 1, 10 and 100 recipient devices, next to raw ChaCha20-Poly1305 on the same bodies with
 * the same backend, measured in the same run. Sealing costs one Noise X message per recipient
 * (an ephemeral key and two X25519 operations) on top of one body encryption; opening costs one
 * X read (two X25519 operations) and one body decryption, whatever the recipient count (plus
 * hashing the larger envelope). Each figure is the median of several samples; MB/s counts body
 * octets (1 MB = 10^6 octets).
 */
import { defaultBackend } from "../protocol/crypto.ts";
import { importStaticKey } from "../protocol/noise.ts";
import { openEnvelope, sealEnvelope } from "../protocol/envelope.ts";
import { msPerCall } from "./helpers/timing.ts";

const REPETITIONS = 5;
const SIZES: Array<[string, number]> = [["1 KiB", 1024], ["64 KiB", 64 * 1024]];
const RECIPIENTS = [1, 10, 100];

/** Median milliseconds per call of `fn` (bench/helpers/timing.ts). */
const time = (fn: () => void) => msPerCall(fn, { repetitions: REPETITIONS, minSampleMs: 50 });

function row(op: string, size: string, recipients: string, ms: number, body: number, wire = "") {
  const perSecond = 1000 / ms;
  const mbps = (body * perSecond) / 1e6;
  return `| ${op.padEnd(27)} | ${size.padStart(6)} | ${recipients.padStart(10)} | ` +
    `${perSecond.toFixed(0).padStart(9)} | ${mbps.toFixed(1).padStart(8)} | ${
      (ms * 1000).toFixed(1).padStart(9)
    } | ${wire.padStart(10)} |`;
}

/** Prints the envelope table. */
export async function run(): Promise<void> {
  const backend = defaultBackend;
  console.log(
    `\nSealed envelopes v1 (backend ${backend.name}: ${backend.x25519.name}, ${backend.aead.name}), ` +
      `median of ${REPETITIONS} samples; load average ${
        Deno.loadavg().map((l) => l.toFixed(1)).join(" ")
      } on ${navigator.hardwareConcurrency} cores`,
  );
  console.log(
    "| operation                   |   body | recipients |     ops/s |     MB/s |   µs/op |   envelope |",
  );
  console.log(
    "|-----------------------------|--------|------------|-----------|----------|---------|------------|",
  );
  const sender = backend.generateKeypair();
  const senderKey = importStaticKey(sender, backend);
  const people = Array.from({ length: Math.max(...RECIPIENTS) }, (_, i) => ({
    deviceId: `device-${i}`,
    keypair: backend.generateKeypair(),
  }));
  const key = crypto.getRandomValues(new Uint8Array(32));
  const nonce = new Uint8Array(12);
  const ad = new Uint8Array(64);
  let sink = 0;
  for (const [label, size] of SIZES) {
    const body = crypto.getRandomValues(new Uint8Array(size));
    const rawEnc = time(() => {
      sink += backend.aead.encrypt(key, nonce, ad, body).length;
    });
    const ct = backend.aead.encrypt(key, nonce, ad, body);
    const rawDec = time(() => {
      sink += backend.aead.decrypt(key, nonce, ad, ct).length;
    });
    console.log(row("raw ChaCha20-Poly1305 seal", label, "—", rawEnc, size));
    console.log(row("raw ChaCha20-Poly1305 open", label, "—", rawDec, size));
    for (const n of RECIPIENTS) {
      const recipients = people.slice(0, n).map((p) => ({
        deviceId: p.deviceId,
        publicKey: p.keypair.publicKey,
      }));
      const members = ["sender", ...recipients.map((r) => r.deviceId)];
      const conversation = { kind: "members" as const, members };
      let counter = 1;
      const seal = () =>
        sealEnvelope({
          sender: "sender",
          senderKey,
          conversation,
          counter: counter++,
          recipients,
          body,
          backend,
        });
      const sample = seal();
      const sealMs = time(() => {
        sink += seal().length;
      });
      const last = people[n - 1];
      const lastKey = importStaticKey(last.keypair, backend);
      const openMs = time(() => {
        sink += openEnvelope(sample, {
          recipient: last.deviceId,
          recipientKey: lastKey,
          serverSender: "sender",
          senderKey: sender.publicKey,
          backend,
        }).plaintext.length;
      });
      const wire = `${(sample.length / 1024).toFixed(1)} KiB`;
      console.log(row("sealEnvelope", label, String(n), sealMs, size, wire));
      console.log(row("openEnvelope (1 recipient)", label, String(n), openMs, size, wire));
    }
  }
  if (sink === 0) console.log("(unreachable)");
  console.log(
    "ops/s = envelopes per second on one core; MB/s = body octets; seal time grows with the " +
      "recipient count (one Noise X wrap each), open time does not.",
  );
  await Promise.resolve(); // the bench runner awaits every bench
}

if (import.meta.main) await run();
