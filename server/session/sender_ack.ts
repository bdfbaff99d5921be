/**
 * The sender's ACK of a routed frame (ccp1.md §5): sent once every durable copy is either
 * acknowledged by its recipient or committed to the relay queue (or the federation outbox) —
 * never merely because a copy was handed to a live connection, which may die with the node.
 *
 * @module
 */
import type { FrameType } from "../../protocol/frame.ts";
import type { RelayItem } from "../../protocol/relay_item.ts";

/** What the sender's connection offers the ACK: send it, or refuse the frame. */
export interface AckTarget {
  readonly state: string;
  sendAck(channel: number, acked: number): number;
}

/** A relayed frame as it travels through this node. */
export interface RoutedItem extends RelayItem {
  /** The sender's pending ACK; null for copies from the queue, the bus or federation. */
  ack: SenderAck | null;
  /** `Date.now()` when the item was routed (a live copy's age is measured from it). */
  at: number;
  /** The sender stamp for capable recipients, made once per item (ccp1.md §4.2). */
  stamp?: Uint8Array;
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

  constructor(
    private readonly target: AckTarget,
    readonly type: FrameType,
    readonly channel: number,
    readonly sequence: number,
    private readonly onSent: (ack: SenderAck) => void,
  ) {}

  /** One more copy to wait for. */
  hold(): void {
    this.#remaining++;
  }

  /** A copy is held by its recipient or durably stored. */
  settle(): void {
    if (this.#done || --this.#remaining > 0) return;
    this.#done = true;
    if (this.target.state !== "open") return; // the sender resends after its reconnect
    this.target.sendAck(this.channel, this.sequence);
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
