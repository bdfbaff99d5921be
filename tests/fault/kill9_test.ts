/**
 * Fault: kill -9 of a node while the recipient's reader is paused, in each placement of sender
 * and recipient. The sender sends numbered frames and counts the server's ACKs; the recipient
 * stops reading for 1.5 s (its frames are handed over but not acknowledged), the node is killed,
 * and the recipient reconnects to a surviving node and collects what arrives. Asserted: 0
 * acknowledged frames lost (duplicates allowed and counted).
 *
 * Where the copy crosses nodes it is in the relay queue before the sender's ACK. The same-node
 * placement holds by the ACK rule of ccp1.md §5: the sender's ACK waits until each copy is
 * acknowledged by its recipient or committed to the relay queue (before the rule it lost the
 * frames in flight: 1024 of 2000, the `max_inflight` window). Needs COMMUCAT_TEST_PG_DSN; uses a
 * Redis of its own.
 */
import assert from "node:assert/strict";
import { silentClient } from "../server/helpers/client.ts";
import {
  connect,
  identity,
  NumberedInbox,
  NumberedSender,
  REDIS_SERVER,
  stopNode,
  until,
  withFaultNodes,
} from "./harness.ts";

const PG = Deno.env.get("COMMUCAT_TEST_PG_DSN") ?? null;
const FRAMES = 2000;

/** Where the sender and the recipient are, and which node is killed (0 or 1). */
const PLACEMENTS = [
  { name: "sender and recipient on the killed node", sender: 0, recipient: 0, killed: 0 },
  { name: "recipient on the killed node", sender: 0, recipient: 1, killed: 1 },
  { name: "sender on the killed node", sender: 0, recipient: 1, killed: 0 },
];

for (const placement of PLACEMENTS) {
  Deno.test(
    {
      name: `fault: kill -9 with a paused reader, ${placement.name}: 0 acknowledged frames lost`,
      ignore: PG === null || REDIS_SERVER === null,
      sanitizeOps: false,
      sanitizeResources: false,
    },
    () =>
      withFaultNodes(
        { prefix: "kill9", dsn: PG!, stop: "SIGKILL" },
        async ({ nodes, keys, track }) => {
          const run = crypto.randomUUID().slice(0, 8);
          const bId = identity("kill-b");
          const a = await connect(
            nodes[placement.sender].tcpPort,
            keys.publicKey,
            identity("kill-a"),
          );
          track(a);
          // The recipient completes its handshake, then never reads (a paused reader).
          const silent = track(
            await silentClient(
              nodes[placement.recipient].tcpPort,
              keys.publicKey,
              bId.deviceId,
              bId.keypair,
            ),
          );
          await a.join(47, [bId.deviceId]);
          await new Promise((r) => setTimeout(r, 300));
          const sender = new NumberedSender(a, 47, run);
          sender.send(0, FRAMES);
          await sender.settle(1500); // what was acknowledged during the 1.5 s pause
          const ackedBeforeKill = sender.acked.size;
          await stopNode(nodes[placement.killed], "SIGKILL");
          silent.close();

          const survivor = nodes[1 - placement.killed];
          const inbox = new NumberedInbox(run);
          // A sender on the killed node learns nothing more; one elsewhere keeps counting.
          if (placement.sender !== placement.killed) await sender.settle(10_000);
          const b = await connect(survivor.tcpPort, keys.publicKey, bId, { sink: inbox.sink });
          track(b);
          await until(() => inbox.lost(sender.acked).length === 0, 20_000, "acknowledged frames")
            .catch(() => {});
          const lost = inbox.lost(sender.acked);
          console.log(
            `kill -9 (${placement.name}): sent ${FRAMES}, acknowledged ${sender.acked.size} ` +
              `(${ackedBeforeKill} before the kill), received ${inbox.seen.size}, lost ${lost.length}, ` +
              `duplicates ${inbox.duplicates}`,
          );
          assert.deepEqual(lost, [], "acknowledged frames that never arrived");
        },
      ),
  );
}
