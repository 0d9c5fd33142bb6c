import type { Clock, Timers } from "./env.js";
import type { ReceiptItem, SequenceMeta, Transport } from "./types.js";

/** Sends one batch; resolves true when the gateway took it. */
export type ReceiptSend = (items: ReceiptItem[], final: boolean) => Promise<boolean>;

/** Tuning of a ReceiptCollector. */
export interface ReceiptOptions {
  /**
   * How long after a message's first copy (or after its gap was given up
   * on) the collector waits for the other copy before it reports it
   * (default 5000 ms).
   */
  windowMs?: number;
  /** How long a finished receipt may wait before its batch goes (default 10000 ms). */
  flushMs?: number;
  /** Receipts per batch, at most the gateway's 500 (default 200). */
  maxBatch?: number;
}

interface Pending {
  item: ReceiptItem;
  due: number;
}

/** Counters of a ReceiptCollector. */
export interface ReceiptStats {
  /** Receipts finished (sent or waiting to be). */
  finished: number;
  /** Receipts the gateway accepted. */
  sent: number;
  /** Receipts in batches that failed. */
  failed: number;
}

const MAX_FINISHED_IDS = 10000;
const MAX_OUTBOX = 5000;

/**
 * ReceiptCollector turns what the page received into receipts: for each
 * sequenced message, which transports delivered it and the latency
 * through each (gateway acceptance to receipt, on the gateway's clock via
 * offset), or that it never came (a gap). It batches them and hands each
 * batch to send, at most every flushMs, or at once when a batch is full or
 * on flush(). Single-threaded; timers injected.
 */
export class ReceiptCollector {
  readonly stats: ReceiptStats = { finished: 0, sent: 0, failed: 0 };
  private readonly pending = new Map<string, Pending>();
  private readonly finishedIds = new Set<string>();
  private readonly finishedOrder: string[] = [];
  private outbox: ReceiptItem[] = [];
  private sweepTimer: unknown;
  private flushTimer: unknown;
  private readonly windowMs: number;
  private readonly flushMs: number;
  private readonly maxBatch: number;
  private inflight: Promise<void> = Promise.resolve();

  constructor(
    private readonly send: ReceiptSend,
    private readonly clock: Clock,
    private readonly timers: Timers,
    private readonly offset: () => number,
    opts: ReceiptOptions = {},
  ) {
    this.windowMs = opts.windowMs ?? 5000;
    this.flushMs = opts.flushMs ?? 10000;
    this.maxBatch = Math.min(500, opts.maxBatch ?? 200);
  }

  /** A copy of a sequenced message arrived through transport at receivedAt. */
  arrived(sy: SequenceMeta, transport: Transport, receivedAt: number): void {
    if (this.finishedIds.has(sy.id)) return;
    let p = this.pending.get(sy.id);
    if (!p) {
      p = { item: { epoch: sy.epoch, seq: sy.seq, channel: sy.channel }, due: this.clock.now() + this.windowMs };
      this.pending.set(sy.id, p);
    }
    const ms = Math.round((receivedAt + this.offset() - sy.ts) * 10) / 10;
    if (transport === "legacy" && p.item.legacyMs === undefined) p.item.legacyMs = ms;
    if (transport === "realtime" && p.item.realtimeMs === undefined) p.item.realtimeMs = ms;
    if (!p.item.channel) p.item.channel = sy.channel;
    if (p.item.legacyMs !== undefined && p.item.realtimeMs !== undefined) this.finish(sy.id, p);
    this.armSweep();
  }

  /** Message seq of epoch was given up on; it is reported as received by neither unless it still comes within the window. */
  missing(epoch: string, seq: number): void {
    const id = `${epoch}-${seq}`;
    if (this.finishedIds.has(id) || this.pending.has(id)) return;
    this.pending.set(id, { item: { epoch, seq }, due: this.clock.now() + this.windowMs });
    this.armSweep();
  }

  /** Receipts still waiting for their window. */
  get waiting(): number {
    return this.pending.size;
  }

  /** Receipts finished but not sent yet. */
  get unsent(): number {
    return this.outbox.length;
  }

  /**
   * Sends what is finished; with finishAll, first finishes every pending
   * receipt as it stands. final marks the page going away (the sender may
   * use navigator.sendBeacon). Resolves when the batches were answered.
   */
  flush(finishAll = false, final = false): Promise<void> {
    if (finishAll) for (const [id, p] of [...this.pending]) this.finish(id, p);
    if (this.flushTimer !== undefined) this.timers.clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    while (this.outbox.length > 0) {
      const batch = this.outbox.splice(0, this.maxBatch);
      this.inflight = this.inflight.then(() =>
        this.send(batch, final).then(
          (ok) => {
            if (ok) this.stats.sent += batch.length;
            else this.stats.failed += batch.length;
          },
          () => {
            this.stats.failed += batch.length;
          },
        ),
      );
    }
    return this.inflight;
  }

  /** Stops the timers; pending receipts are dropped. */
  close(): void {
    if (this.sweepTimer !== undefined) this.timers.clearTimeout(this.sweepTimer);
    if (this.flushTimer !== undefined) this.timers.clearTimeout(this.flushTimer);
    this.sweepTimer = this.flushTimer = undefined;
    this.pending.clear();
  }

  private finish(id: string, p: Pending): void {
    this.pending.delete(id);
    this.finishedIds.add(id);
    this.finishedOrder.push(id);
    if (this.finishedOrder.length > MAX_FINISHED_IDS) {
      for (const o of this.finishedOrder.splice(0, this.finishedOrder.length - MAX_FINISHED_IDS)) this.finishedIds.delete(o);
    }
    this.stats.finished++;
    this.outbox.push(p.item);
    if (this.outbox.length > MAX_OUTBOX) this.outbox.splice(0, this.outbox.length - MAX_OUTBOX);
    if (this.outbox.length >= this.maxBatch) {
      void this.flush();
    } else if (this.flushTimer === undefined) {
      this.flushTimer = this.timers.setTimeout(() => {
        this.flushTimer = undefined;
        void this.flush();
      }, this.flushMs);
    }
  }

  private armSweep(): void {
    if (this.sweepTimer !== undefined || this.pending.size === 0) return;
    let due = Infinity;
    for (const p of this.pending.values()) due = Math.min(due, p.due);
    this.sweepTimer = this.timers.setTimeout(() => {
      this.sweepTimer = undefined;
      const now = this.clock.now();
      for (const [id, p] of [...this.pending]) if (p.due <= now) this.finish(id, p);
      this.armSweep();
    }, Math.max(0, due - this.clock.now()));
  }
}
