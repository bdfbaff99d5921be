/**
 * The hand-written storage fakes of other suites run through the same contract as the real
 * store (tests/storage/contract.ts), for the repositories each of them implements: the
 * console's in-memory Storage (tests/console/fake_storage.ts) and federation's peer and outbox
 * repositories (tests/server/federation_fakes.ts). A fake that drifts from the real store
 * fails here instead of letting its suite pass against behaviour production does not have.
 */
import type { Db } from "../../storage/db.ts";
import type { Storage } from "../../storage/types.ts";
import { fakeStorage as consoleFake } from "../console/fake_storage.ts";
import {
  Clock,
  fakeStorage as federationFake,
  MemoryOutboxRepo,
  MemoryPeerRepo,
} from "../server/federation_fakes.ts";
import { registerContract, STATIC_PEER } from "./contract.ts";

/** Fakes have no SQL: a case that reaches for the database fails naming it. */
const noDb = new Proxy({}, {
  get() {
    throw new Error("a fake storage has no database");
  },
}) as Db;

function fake(storage: Storage) {
  return { storage, db: noDb, close: () => Promise.resolve() };
}

registerContract({
  name: "console fake",
  ignore: false,
  areas: [
    "users",
    "devices",
    "handshake",
    "key events",
    "sessions",
    "groups",
    "peers",
    "peer audit",
    "outbox",
    "audit",
  ],
  without: {
    "devices: a failed key-event write aborts the change":
      "a SQL trigger makes the write fail; the fake has no database",
    "sessions: open admits only a device active with the key, and writes nothing otherwise":
      "the console never admits sessions",
    "sessions: open waits for a revocation in progress and then refuses the device":
      "the console never admits sessions",
  },
  open: () => Promise.resolve(fake(consoleFake(Date.now, [STATIC_PEER]))),
});

registerContract({
  name: "federation fakes",
  ignore: false,
  areas: ["peers", "outbox"],
  open: () => {
    const clock = new Clock();
    return Promise.resolve(
      fake(federationFake(new MemoryPeerRepo(), new MemoryOutboxRepo(clock))),
    );
  },
});
