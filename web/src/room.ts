import { backoffDelay, documentVisibility, systemClock, systemTimers, type Clock, type Timers, type Visibility } from "./env.js";
import { Sequencer, type Delivery, type SequencerStats } from "./order.js";
import { ReceiptCollector, type ReceiptOptions, type ReceiptStats } from "./receipts.js";
import { fetchToken, tokensOf, validateAnswer, type FetchLike, type TokenResult } from "./token.js";
import {
  inngestRealtimeFactory,
  partySocketFactory,
  type LegacyFactory,
  type PartySocketOptions,
  type RealtimeFactory,
  type RealtimeTarget,
  type TransportHandle,
} from "./transports.js";
import { SwitchyardError, type Envelope, type ReceiptItem, type Stage, type TokenAnswer, type Transport } from "./types.js";

/**
 * What the UI can show: connecting (nothing live yet), open (Inngest
 * Realtime live), fallback (PartyKit only: realtime is off for the room,
 * or failing), paused (the tab is hidden), error (the gateway refused the
 * grant or the room: `error` says why; nothing is connected), closed.
 */
export type Status = "connecting" | "open" | "fallback" | "paused" | "error" | "closed";

/** What onMessage is told about one message besides its envelope. */
export interface MessageMeta {
  /** The transport whose copy was delivered (the first to arrive). */
  transport: Transport;
  /** When it arrived, on the page's clock (ms). */
  receivedAt: number;
  /** Acceptance by the gateway to arrival, on the gateway's clock, when known. */
  latencyMs?: number;
  /** True when it arrived after a later message had been delivered. */
  late: boolean;
  /** The message's channel and stage, when known. */
  channel?: string;
  stage?: Stage;
}

/** Options of connectRoom: where, how to authenticate, what to call. */
export interface ConnectRoomOptions {
  /** Switchyard's public base URL, e.g. "https://switchyard.example.com". */
  gateway: string;
  /** The app and room. */
  app: string;
  room: string;
  /**
   * A room grant the app's server signed (docs/security.md), or a function
   * returning a fresh one; a function is called again when the grant is
   * refused, so a page can outlive one grant. Needed for receipts.
   */
  grant?: string | (() => string | Promise<string>);
  /**
   * Instead of a grant: the app's own token function (its server calls
   * POST /v1/realtime/token); null means realtime is off for the room.
   */
  token?: () => Promise<TokenAnswer | null>;
  /** PartyKit host without scheme (e.g. "my-app.partykit.dev"); omit to use realtime only. */
  host?: string;
  /** PartyKit party (default "main"). */
  party?: string;
  /** Overrides the token answer's apiBaseUrl (Inngest's URL as browsers reach it). */
  realtimeUrl?: string;
  /** Each message once, in per-room order. */
  onMessage?: (envelope: Envelope, meta: MessageMeta) => void;
  /** Every status change. */
  onStatus?: (status: Status, error: SwitchyardError | null) => void;
  /** Pause while the tab is hidden, as useRealtime does (default true). */
  pauseOnHidden?: boolean;
  /** Reconnect backoff of the realtime side (defaults 250 and 5000 ms). */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** How long a missing sequence number is waited for (default 3000 ms). */
  gapTimeoutMs?: number;
  /** How often to ask again while realtime is off for the room (default 15000 ms). */
  pollIntervalMs?: number;
  /** Longest time between two token requests (default 30000 ms; tokens live 60 s). */
  refreshMaxMs?: number;
  /**
   * How long a realtime subscription is kept after the room went back to
   * PartyKit (404 realtime_disabled, or the kill switch), so that a quick
   * return to realtime loses nothing (default 600000 ms).
   */
  legacyGraceMs?: number;
  /** Receipts to the gateway (default on when a grant is given); false turns them off. */
  receipts?: boolean | ReceiptOptions;
  /** partysocket options (reconnect delays...). */
  partySocket?: PartySocketOptions;
  /** Injected for tests and other runtimes. */
  clock?: Clock;
  timers?: Timers;
  random?: () => number;
  fetch?: FetchLike;
  sendBeacon?: (url: string, body: Blob) => boolean;
  visibility?: Visibility;
  legacyFactory?: LegacyFactory;
  realtimeFactory?: RealtimeFactory;
}

/** Counters of a room connection. */
export interface RoomStats extends SequencerStats {
  /** Copies received per transport (duplicates included). */
  received: Record<Transport, number>;
  /** Deliveries per transport. */
  deliveredVia: Record<Transport, number>;
  receipts: ReceiptStats;
  /** Token answers and realtime_disabled answers received. */
  tokens: number;
  disabled: number;
}

/** A live room connection. */
export interface Room {
  readonly status: Status;
  readonly error: SwitchyardError | null;
  /** A snapshot of the counters. */
  stats(): RoomStats;
  /** Messages waiting for an earlier one, and receipts waiting for their window. */
  pending(): { messages: number; receipts: number };
  /** Asks the token endpoint again now (stages, a fresh token). */
  refresh(): Promise<void>;
  /** Finishes every receipt and sends them; resolves when answered. */
  flushReceipts(): Promise<void>;
  /** Closes everything; pending receipts are sent with navigator.sendBeacon. */
  close(): void;
}

interface Sub {
  key: string;
  target: RealtimeTarget;
  handle?: TransportHandle;
  open: boolean;
  attempt: number;
  retry: unknown;
  retiring: boolean;
  /** Bumped on every open and drop: callbacks of an older handle are ignored. */
  gen: number;
}

function isEnvelope(v: unknown): v is Envelope {
  const e = v as Envelope;
  return !!e && typeof e === "object" && typeof e.requestId === "string" && typeof e.name === "string" && "body" in e;
}

/**
 * connectRoom subscribes a page to one room of one app through whatever
 * transports the room's stages use, and calls onMessage once per message,
 * in order (docs/browser.md). It starts at once; close() ends it.
 *
 * - It asks the gateway's token endpoint (with the grant, or the app's
 *   token function). 404 realtime_disabled: PartyKit only (status
 *   "fallback"), asked again every pollIntervalMs and as soon as a message
 *   shows a stage past legacy. A token: Inngest Realtime too (status
 *   "open"), refreshed before it expires.
 * - The PartyKit socket stays open while the app migrates (when host is
 *   given), so the kill switch loses nothing.
 * - Sequenced apps (`sy` in the envelope): duplicates suppressed by id,
 *   order restored by sequence number; receipts sent to the gateway.
 *   Other apps: each channel's copies are taken from the transport that
 *   answers for its stage.
 */
export function connectRoom(options: ConnectRoomOptions): Room {
  const o = options;
  const clock = o.clock ?? systemClock;
  const timers = o.timers ?? systemTimers;
  const random = o.random ?? Math.random;
  const fetchFn: FetchLike = o.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const beacon =
    o.sendBeacon ??
    ((url: string, body: Blob) => {
      const nav = (globalThis as { navigator?: Navigator }).navigator;
      return !!nav && typeof nav.sendBeacon === "function" && nav.sendBeacon(url, body);
    });
  const visibility = o.visibility ?? documentVisibility();
  const legacyFactory = o.legacyFactory ?? partySocketFactory(o.partySocket);
  const realtimeFactory = o.realtimeFactory ?? inngestRealtimeFactory;
  const minMs = o.reconnectMinMs ?? 250;
  const maxMs = o.reconnectMaxMs ?? 5000;
  const pollMs = o.pollIntervalMs ?? 15000;
  const refreshMaxMs = o.refreshMaxMs ?? 30000;
  const graceMs = o.legacyGraceMs ?? 600000;
  const gateway = o.gateway.replace(/\/+$/, "");

  let closed = false;
  let paused = false;
  let status: Status = "connecting";
  let error: SwitchyardError | null = null;
  let fatal = false;
  let answer: TokenAnswer | undefined;
  let disabledSince: number | undefined;
  let offsetMs = 0;
  let legacy: TransportHandle | undefined;
  let legacyOpen = false;
  const subs = new Map<string, Sub>();
  let fetching: Promise<void> | undefined;
  /** When a stage hint last asked for a token: hints ask at most once a second. */
  let lastHintAt = -Infinity;
  /** A stage hint came while a token request (answered before it) was in flight. */
  let hintAgain = false;
  let tokenAttempt = 0;
  let tokenTimer: unknown;
  let graceTimer: unknown;
  let lastGrant: string | undefined = typeof o.grant === "string" ? o.grant : undefined;
  const stats = {
    received: { legacy: 0, realtime: 0 } as Record<Transport, number>,
    deliveredVia: { legacy: 0, realtime: 0 } as Record<Transport, number>,
    tokens: 0,
    disabled: 0,
  };

  const receiptsOn = o.receipts !== false && o.grant !== undefined;
  const receipts = receiptsOn
    ? new ReceiptCollector(sendReceipts, clock, timers, () => offsetMs, typeof o.receipts === "object" ? o.receipts : {})
    : undefined;

  const sequencer = new Sequencer(
    {
      deliver(d: Delivery) {
        const sy = d.envelope.sy;
        stats.deliveredVia[d.transport]++;
        if (sy) receipts?.arrived(sy, d.transport, d.receivedAt);
        const channel = sy?.channel ?? answer?.events?.[d.envelope.name] ?? (answer ? "default" : undefined);
        const meta: MessageMeta = {
          transport: d.transport,
          receivedAt: d.receivedAt,
          late: d.late,
          latencyMs: sy ? d.receivedAt + offsetMs - sy.ts : undefined,
          channel,
          stage: sy?.stage ?? answer?.channels.find((c) => c.name === channel)?.stage,
        };
        try {
          o.onMessage?.(d.envelope, meta);
        } catch (e) {
          console.error("switchyard: onMessage threw", e);
        }
      },
      duplicate(sy, transport, receivedAt) {
        receipts?.arrived(sy, transport, receivedAt);
      },
      gap(epoch, seq) {
        receipts?.missing(epoch, seq);
      },
    },
    timers,
    clock,
    o.gapTimeoutMs ?? 3000,
  );

  function setTimer(fn: () => void, ms: number): unknown {
    return timers.setTimeout(fn, Math.max(0, ms));
  }
  function clearTimer(h: unknown): void {
    if (h !== undefined) timers.clearTimeout(h);
  }

  function update(): void {
    let next: Status;
    if (closed) next = "closed";
    else if (fatal) next = "error";
    else if (paused) next = "paused";
    else if ([...subs.values()].some((s) => s.open) && disabledSince === undefined && answer) next = "open";
    else if (legacyOpen) next = "fallback";
    else next = "connecting";
    if (next !== status) {
      status = next;
      try {
        o.onStatus?.(status, error);
      } catch (e) {
        console.error("switchyard: onStatus threw", e);
      }
    }
  }

  async function currentGrant(): Promise<string> {
    if (typeof o.grant === "function") lastGrant = await o.grant();
    else lastGrant = o.grant;
    return lastGrant ?? "";
  }

  async function sendReceipts(items: ReceiptItem[], final: boolean): Promise<boolean> {
    const grant = final || typeof o.grant !== "function" ? lastGrant ?? "" : await currentGrant();
    const body = JSON.stringify({ app: o.app, room: o.room, grant, receipts: items });
    const url = `${gateway}/v1/receipts`;
    if (final && beacon(url, new Blob([body], { type: "text/plain;charset=UTF-8" }))) return true;
    const res = await fetchFn(url, {
      method: "POST",
      body,
      keepalive: body.length < 60000,
      headers: { "Content-Type": "text/plain;charset=UTF-8" },
    });
    return res.ok;
  }

  // ---- PartyKit side ----

  function openLegacy(): void {
    if (!o.host || legacy || closed || paused || fatal) return;
    legacy = legacyFactory(
      { host: o.host, party: o.party ?? "main", room: o.room },
      {
        onOpen() {
          legacyOpen = true;
          update();
        },
        onMessage(d) {
          onFrame(d, "legacy");
        },
        onClose() {
          legacyOpen = false;
          update();
        },
      },
    );
  }

  function closeLegacy(): void {
    legacy?.close();
    legacy = undefined;
    legacyOpen = false;
  }

  // ---- realtime side ----

  function subKey(channel: string, topics: string[]): string {
    return `${channel}|${[...topics].sort().join(",")}`;
  }

  function syncRealtime(a: TokenAnswer): void {
    const want = new Set<string>();
    for (const t of tokensOf(a)) {
      const key = subKey(t.channel, t.topics);
      want.add(key);
      const target: RealtimeTarget = { key: t.key, channel: t.channel, topics: t.topics, apiBaseUrl: o.realtimeUrl ?? a.apiBaseUrl };
      const s = subs.get(key);
      if (s) {
        s.target = target; // a fresh token for its next reconnect
        s.retiring = false;
        if (!s.handle && s.retry === undefined) openSub(s);
        continue;
      }
      const ns: Sub = { key, target, open: false, attempt: 0, retry: undefined, retiring: false, gen: 0 };
      subs.set(key, ns);
      openSub(ns);
    }
    for (const s of subs.values()) if (!want.has(s.key)) s.retiring = true;
    retire();
  }

  /** Closes retiring subscriptions once every wanted one is open (make before break). */
  function retire(): void {
    const wanted = [...subs.values()].filter((s) => !s.retiring);
    if (wanted.length > 0 && !wanted.every((s) => s.open)) return;
    for (const s of [...subs.values()]) if (s.retiring) dropSub(s);
  }

  function dropSub(s: Sub): void {
    clearTimer(s.retry);
    s.retry = undefined;
    const h = s.handle;
    s.handle = undefined;
    s.open = false;
    s.gen++;
    subs.delete(s.key);
    h?.close();
  }

  function openSub(s: Sub): void {
    if (closed || paused || fatal) return;
    const gen = ++s.gen;
    const live = () => s.gen === gen && subs.get(s.key) === s;
    s.handle = realtimeFactory(s.target, {
      onOpen() {
        if (!live()) return;
        s.open = true;
        s.attempt = 0;
        retire();
        update();
      },
      onMessage(d) {
        if (live()) onFrame(d, "realtime");
      },
      onClose() {
        if (!live()) return;
        s.gen++;
        s.open = false;
        s.handle = undefined;
        update();
        if (closed || paused || fatal) return;
        if (s.retiring || disabledSince !== undefined) {
          dropSub(s); // no token to reconnect with: PartyKit carries the room
          update();
          return;
        }
        const delay = backoffDelay(s.attempt++, minMs, maxMs, random);
        s.retry = setTimer(() => {
          s.retry = undefined;
          if (!subs.has(s.key)) return;
          const exp = Math.min(...(answer ? tokensOf(answer) : []).map((t) => Date.parse(t.expiresAt)));
          if (!(exp - (clock.now() + offsetMs) >= 10000)) void refresh(); // syncRealtime reopens it
          else openSub(s);
        }, delay);
      },
    });
  }

  function closeRealtime(): void {
    for (const s of [...subs.values()]) dropSub(s);
  }

  // ---- frames ----

  function onFrame(data: unknown, transport: Transport): void {
    if (closed || paused || !isEnvelope(data)) return;
    stats.received[transport]++;
    const env = data;
    if (!env.sy && !takesUnsequenced(env, transport)) return;
    if (transport === "legacy" && env.sy && env.sy.stage !== "legacy" && subs.size === 0) {
      // The room moved past legacy: subscribe to realtime now rather than
      // at the next poll (after the request in flight, which may predate
      // the change).
      if (fetching) hintAgain = true;
      else if (clock.now() - lastHintAt > 1000) {
        lastHintAt = clock.now();
        void refresh();
      }
    }
    sequencer.push(env, transport, clock.now());
  }

  /** For apps without sequence: take a channel's copies from its answering transport. */
  function takesUnsequenced(env: Envelope, transport: Transport): boolean {
    if (!answer || disabledSince !== undefined || answer.killSwitch) return transport === "legacy" || !o.host;
    const ch = answer.events?.[env.name] ?? "default";
    const stage = answer.channels?.find((c) => c.name === ch)?.stage ?? "legacy";
    const answering: Transport = stage === "dual" || stage === "realtime" ? "realtime" : "legacy";
    return transport === answering || (answering === "legacy" && !o.host);
  }

  // ---- the token endpoint ----

  async function getToken(): Promise<TokenResult> {
    if (o.token) {
      const t0 = clock.now();
      const a = await o.token();
      const t1 = clock.now();
      if (a === null) return { kind: "disabled", message: "the app's token function answered null" };
      const v = validateAnswer(a);
      return { kind: "token", answer: v, offsetMs: typeof v.serverTime === "number" ? v.serverTime - (t0 + t1) / 2 : 0 };
    }
    const grant = await currentGrant();
    return fetchToken(fetchFn, () => clock.now(), gateway, o.app, o.room, grant);
  }

  function scheduleToken(ms: number): void {
    clearTimer(tokenTimer);
    tokenTimer = setTimer(() => {
      tokenTimer = undefined;
      void refresh();
    }, ms);
  }

  function refresh(): Promise<void> {
    if (closed || paused) return Promise.resolve();
    if (fetching) return fetching;
    fetching = (async () => {
      try {
        const r = await getToken();
        if (closed || paused) return;
        tokenAttempt = 0;
        if (fatal) {
          fatal = false;
          openLegacy();
        }
        error = null;
        if (r.kind === "disabled") onDisabled();
        else onToken(r.answer, r.offsetMs);
      } catch (e) {
        if (closed || paused) return;
        onTokenError(e instanceof SwitchyardError ? e : new SwitchyardError("network", 0, String(e)));
      } finally {
        fetching = undefined;
        update();
      }
      if (hintAgain) {
        hintAgain = false;
        lastHintAt = clock.now();
        if (subs.size === 0) void refresh();
      }
    })();
    return fetching;
  }

  function onToken(a: TokenAnswer, offset: number): void {
    stats.tokens++;
    answer = a;
    offsetMs = offset;
    disabledSince = undefined;
    clearTimer(graceTimer);
    graceTimer = undefined;
    if (a.sequence) sequencer.start(a.sequence.epoch, a.sequence.last);
    syncRealtime(a);
    const exps = tokensOf(a).map((t) => Date.parse(t.expiresAt) - offset);
    const left = Math.min(...exps) - clock.now();
    scheduleToken(Math.min(refreshMaxMs, Math.max(5000, Number.isFinite(left) ? left / 2 : refreshMaxMs)));
  }

  function onDisabled(): void {
    stats.disabled++;
    if (disabledSince === undefined) disabledSince = clock.now();
    if (answer) answer = { ...answer, channels: answer.channels.map((c) => ({ ...c, stage: "legacy" as Stage })) };
    openLegacy();
    if (subs.size > 0) {
      const left = disabledSince + graceMs - clock.now();
      if (left <= 0) closeRealtime();
      else if (graceTimer === undefined) {
        graceTimer = setTimer(() => {
          graceTimer = undefined;
          if (disabledSince !== undefined) {
            closeRealtime();
            update();
          }
        }, left);
      }
    }
    scheduleToken(pollMs);
  }

  function onTokenError(e: SwitchyardError): void {
    error = e;
    if (e.fatal) {
      fatal = true;
      closeLegacy();
      closeRealtime();
      // A grant function may give a fresh grant: try again, slowly.
      if (typeof o.grant === "function" || o.token) scheduleToken(backoffDelay(tokenAttempt++, 1000, 60000, random));
      return;
    }
    openLegacy();
    const wait = e.retryAfter ? e.retryAfter * 1000 : backoffDelay(tokenAttempt++, minMs * 4, 30000, random);
    scheduleToken(wait);
  }

  // ---- visibility ----

  function pause(): void {
    if (paused || closed) return;
    paused = true;
    clearTimer(tokenTimer);
    tokenTimer = undefined;
    closeLegacy();
    closeRealtime();
    void receipts?.flush(true, true);
    update();
  }

  function resume(): void {
    if (!paused || closed) return;
    paused = false;
    sequencer.resync();
    if (!fatal) openLegacy();
    update();
    void refresh();
  }

  const unsubscribeVisibility =
    o.pauseOnHidden === false
      ? () => {}
      : visibility.subscribe(() => {
          if (visibility.hidden()) pause();
          else resume();
        });

  // ---- start ----
  if (o.pauseOnHidden !== false && visibility.hidden()) {
    paused = true;
    update();
  } else {
    openLegacy();
    void refresh();
  }

  return {
    get status() {
      return status;
    },
    get error() {
      return error;
    },
    stats(): RoomStats {
      return {
        ...sequencer.stats,
        received: { ...stats.received },
        deliveredVia: { ...stats.deliveredVia },
        receipts: receipts ? { ...receipts.stats } : { finished: 0, sent: 0, failed: 0 },
        tokens: stats.tokens,
        disabled: stats.disabled,
      };
    },
    pending() {
      return { messages: sequencer.waiting, receipts: (receipts?.waiting ?? 0) + (receipts?.unsent ?? 0) };
    },
    refresh,
    flushReceipts() {
      return receipts ? receipts.flush(true) : Promise.resolve();
    },
    close() {
      if (closed) return;
      void receipts?.flush(true, true);
      closed = true;
      unsubscribeVisibility();
      clearTimer(tokenTimer);
      clearTimer(graceTimer);
      closeLegacy();
      closeRealtime();
      sequencer.close();
      receipts?.close();
      update();
    },
  };
}
