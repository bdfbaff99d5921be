/**
 * The sender's ACK of a routed frame (ccp1.md §5): sent once every durable copy is either
 * acknowledged by its recipient or committed to the relay queue (or the federation outbox) —
 * never merely because a copy was handed to a live connection, which may die with the node.
 *
 * @module
 */
import { FrameType } from "../../protocol/frame.ts";
import type { RelayItem } from "../../protocol/relay_item.ts";

/** What the sender's connection offers the ACK: send it, or refuse the frame. */
export interface AckTarget {
  readonly state: string;
  sendAck(channel: number, acked: number): number;
  sendControl(type: FrameType, channel: number, value: unknown): number;
}

/** A relayed frame as it travels through this node. */
export interface RoutedItem extends RelayItem {
  /** The sender's pending ACK; null for copies from the queue, the bus or federation. */
  ack: SenderAck | null;
  /** `Date.now()` when the item was routed (a live copy's age is measured from it). */
  at: number;
  /** The sender stamp for capable recipients, made once per item (ccp1.md §4.2). */
  stamp?: Uint8Array;
  /** A frame from a peer: the origin's event id, kept with its envelope for the offset report. */
  originEvent?: string;
}

/** Wraps a relay item from the queue, the bus or federation (no sender ACK to settle). */
export function routed(item: RelayItem): RoutedItem {
  return {
    type: item.type,
    channel: item.channel,
    payload: item.payload,
    sender: item.sender,
    ack: null,
    at: Date.now(),
  };
}

/**
 * Counts the copies a frame's ACK waits for. The fan-out holds one count of its own until it
 * has handed out every copy ({@link release}), so the ACK never leaves before the last copy is
 * counted.
 */
export class SenderAck {
  #remaining = 1;
  #done = false;
  /** Copies queued for remote members: the ACK names their event ids (`remote`). */
  #remote: { recipient: string; id: string }[] | null = null;

  /**
   * `onSent` is told once the ACK went out (one function for every ACK: what it reports is
   * carried here, so a frame's ACK costs no closure). `receivedAt` (performance.now() when the
   * frame was read), `recipients` and `bytes` are for it to report.
   */
  constructor(
    private readonly target: AckTarget,
    readonly type: FrameType,
    readonly channel: number,
    readonly sequence: number,
    private readonly onSent: (ack: SenderAck) => void,
    readonly sender = "",
    readonly receivedAt = 0,
    readonly recipients = 0,
    readonly bytes = 0,
  ) {}

  /** A copy for a remote member went into the federation outbox as event `id`. */
  remote(recipient: string, id: string): void {
    (this.#remote ??= []).push({ recipient, id });
  }

  /** One more copy to wait for. */
  hold(): void {
    this.#remaining++;
  }

  /** A copy is held by its recipient or durably stored. */
  settle(): void {
    if (this.#done || --this.#remaining > 0) return;
    this.#done = true;
    if (this.target.state !== "open") return; // the sender resends after its reconnect
    if (this.#remote === null) this.target.sendAck(this.channel, this.sequence);
    else {
      this.target.sendControl(FrameType.Ack, this.channel, {
        ack: this.sequence,
        remote: this.#remote,
      });
    }
    this.onSent(this);
  }

  /** The fan-out counted every copy. */
  release(): void {
    this.settle();
  }

  /** The frame was refused: no ACK will be sent for it. */
  abandon(): void {
    this.#done = true;
  }

  get pending(): boolean {
    return !this.#done;
  }
}
