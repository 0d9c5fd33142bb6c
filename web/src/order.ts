import type { Clock, Timers } from "./env.js";
import type { Envelope, SequenceMeta, Transport } from "./types.js";

/** How one message reached onMessage. */
export interface Delivery {
  envelope: Envelope;
  transport: Transport;
  receivedAt: number;
  /**
   * True when the message came after a later one of its room had been
   * delivered (its gap had timed out): delivered, but out of order.
   */
  late: boolean;
}

/** What the sequencer tells its owner. */
export interface SequencerHooks {
  /** A message to hand to the app, in order. */
  deliver(d: Delivery): void;
  /** A copy of a message already delivered (suppressed). */
  duplicate(sy: SequenceMeta, transport: Transport, receivedAt: number): void;
  /** A sequence number given up on after the gap timeout. */
  gap(epoch: string, seq: number): void;
}

/** Counters of a Sequencer. */
export interface SequencerStats {
  delivered: number;
  duplicates: number;
  late: number;
  gaps: number;
  /** Sequence numbers skipped on purpose (while paused). */
  skipped: number;
}

interface EpochState {
  last: number;
  buffer: Map<number, Delivery>;
  timer: unknown;
  /**
   * Set while the epoch has no established stream (new, or after a
   * pause): the next message decides where it starts, at the latest at
   * anchor + 1 when a start is known.
   */
  resync: boolean;
  anchor: number | undefined;
  /** True until the epoch's first message: numbers before it are history. */
  fresh: boolean;
}

/** Bounds. */
const MAX_SEEN = 10000;
const MAX_BUFFERED = 1000;
const MAX_EPOCHS = 8;

/**
 * Sequencer delivers the messages of one room exactly once and in order,
 * whichever transport brings each copy first (docs/browser.md):
 *
 * - a copy whose id was delivered before is suppressed (`duplicate`);
 * - within an epoch, message seq is delivered once every lower number was,
 *   so a later message that overtook an earlier one (it came through the
 *   faster transport) waits;
 * - a missing number is waited for gapTimeoutMs; then the sequencer
 *   reports it (`gap`) and goes on; if it arrives later it is still
 *   delivered once, marked late;
 * - an epoch it has no start for begins at its first message.
 *
 * Messages without `sy` (unsequenced apps) are delivered as they come. It
 * is single-threaded like the page; the timers are injected.
 */
export class Sequencer {
  readonly stats: SequencerStats = { delivered: 0, duplicates: 0, late: 0, gaps: 0, skipped: 0 };
  private readonly seen = new Set<string>();
  private readonly seenOrder: string[] = [];
  private readonly epochs = new Map<string, EpochState>();

  constructor(
    private readonly hooks: SequencerHooks,
    private readonly timers: Timers,
    private readonly clock: Clock,
    private readonly gapTimeoutMs = 3000,
  ) {}

  /**
   * Tells where epoch stood when the client subscribed (the token answer's
   * sequence start): numbers after last are expected, so a message that
   * overtakes an earlier one right after subscribing still waits for it.
   * Ignored for an epoch whose stream is established.
   */
  start(epoch: string, last: number): void {
    let st = this.epochs.get(epoch);
    if (!st) {
      st = { last: 0, buffer: new Map(), timer: undefined, resync: true, anchor: undefined, fresh: true };
      this.epochs.set(epoch, st);
      this.trimEpochs();
    }
    if (st.resync) st.anchor = last;
  }

  /**
   * Drops the expectation of every epoch's next number, after a pause
   * during which messages were missed on purpose: each epoch starts again
   * at its next message (or after the start given by start), and the
   * numbers passed over are counted as skipped, not as gaps.
   */
  resync(): void {
    for (const st of this.epochs.values()) {
      st.resync = true;
      st.anchor = undefined;
    }
  }

  /** Takes one copy of a message from transport. */
  push(envelope: Envelope, transport: Transport, receivedAt = this.clock.now()): void {
    const sy = envelope.sy;
    if (!sy || typeof sy.id !== "string" || typeof sy.seq !== "number" || typeof sy.epoch !== "string") {
      this.stats.delivered++;
      this.hooks.deliver({ envelope, transport, receivedAt, late: false });
      return;
    }
    if (this.seen.has(sy.id)) {
      this.stats.duplicates++;
      this.hooks.duplicate(sy, transport, receivedAt);
      return;
    }
    let st = this.epochs.get(sy.epoch);
    if (!st) {
      st = { last: 0, buffer: new Map(), timer: undefined, resync: true, anchor: undefined, fresh: true };
      this.epochs.set(sy.epoch, st);
      this.trimEpochs();
    }
    if (st.resync && sy.seq > st.last) {
      const startAt = st.anchor === undefined ? sy.seq - 1 : Math.min(st.anchor, sy.seq - 1);
      if (startAt > st.last) {
        if (!st.fresh) this.stats.skipped += this.countMissing(st, startAt);
        st.last = startAt;
      }
      st.resync = false;
      st.fresh = false;
      st.anchor = undefined;
    }
    const d: Delivery = { envelope, transport, receivedAt, late: false };
    if (sy.seq <= st.last) {
      d.late = true;
      this.stats.late++;
      this.emit(d);
      return;
    }
    if (st.buffer.has(sy.seq)) {
      // Same number, another id: not a copy of the buffered one (a
      // gateway bug or a forged frame); keep the first.
      return;
    }
    st.buffer.set(sy.seq, d);
    this.markSeen(sy.id);
    this.drain(sy.epoch, st);
    if (st.buffer.size > MAX_BUFFERED) this.skipGap(sy.epoch, st);
  }

  /** Number of messages waiting for an earlier one, over all epochs. */
  get waiting(): number {
    let n = 0;
    for (const st of this.epochs.values()) n += st.buffer.size;
    return n;
  }

  /** Stops the gap timers. */
  close(): void {
    for (const st of this.epochs.values()) {
      if (st.timer !== undefined) this.timers.clearTimeout(st.timer);
      st.timer = undefined;
    }
  }

  private emit(d: Delivery): void {
    if (d.envelope.sy) this.markSeen(d.envelope.sy.id);
    this.stats.delivered++;
    this.hooks.deliver(d);
  }

  private markSeen(id: string): void {
    if (this.seen.has(id)) return;
    this.seen.add(id);
    this.seenOrder.push(id);
    if (this.seenOrder.length > MAX_SEEN) {
      const old = this.seenOrder.splice(0, this.seenOrder.length - MAX_SEEN);
      for (const o of old) this.seen.delete(o);
    }
  }

  /** Delivers the buffered run after last; arms or stops the gap timer. */
  private drain(epoch: string, st: EpochState): void {
    for (;;) {
      const next = st.buffer.get(st.last + 1);
      if (!next) break;
      st.buffer.delete(st.last + 1);
      st.last++;
      this.emit(next);
    }
    for (const seq of [...st.buffer.keys()]) {
      if (seq <= st.last) {
        const d = st.buffer.get(seq)!;
        st.buffer.delete(seq);
        d.late = true;
        this.stats.late++;
        this.emit(d);
      }
    }
    if (st.buffer.size === 0) {
      if (st.timer !== undefined) this.timers.clearTimeout(st.timer);
      st.timer = undefined;
    } else if (st.timer === undefined) {
      st.timer = this.timers.setTimeout(() => {
        st.timer = undefined;
        this.skipGap(epoch, st);
      }, this.gapTimeoutMs);
    }
  }

  /** Gives up on the numbers before the lowest buffered one. */
  private skipGap(epoch: string, st: EpochState): void {
    if (st.buffer.size === 0) return;
    const lowest = Math.min(...st.buffer.keys());
    for (let s = st.last + 1; s < lowest; s++) {
      this.stats.gaps++;
      this.hooks.gap(epoch, s);
    }
    st.last = lowest - 1;
    if (st.timer !== undefined) this.timers.clearTimeout(st.timer);
    st.timer = undefined;
    this.drain(epoch, st);
  }

  /** How many numbers in (st.last, upTo] were neither buffered nor delivered. */
  private countMissing(st: EpochState, upTo: number): number {
    let n = 0;
    for (let s = st.last + 1; s <= upTo; s++) if (!st.buffer.has(s)) n++;
    return n;
  }

  private trimEpochs(): void {
    while (this.epochs.size > MAX_EPOCHS) {
      const [oldest, st] = this.epochs.entries().next().value as [string, EpochState];
      if (st.timer !== undefined) this.timers.clearTimeout(st.timer);
      for (const d of [...st.buffer.values()].sort((a, b) => a.envelope.sy!.seq - b.envelope.sy!.seq)) this.emit(d);
      this.epochs.delete(oldest);
    }
  }
}
