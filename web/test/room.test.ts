import { test } from "node:test";
import assert from "node:assert/strict";
import { connectRoom, type ConnectRoomOptions, type MessageMeta, type Status } from "../src/room.js";
import { backoffDelay } from "../src/env.js";
import type { TransportHandlers, RealtimeTarget } from "../src/transports.js";
import type { Envelope, Stage, TokenAnswer } from "../src/types.js";
import { FakeTime, flush, prng } from "./fake.js";

/** A fake transport connection the test drives. */
class FakeConn {
  closed = false;
  constructor(
    readonly h: TransportHandlers,
    readonly target: unknown,
  ) {}
  open() {
    this.h.onOpen();
  }
  send(e: Envelope) {
    if (!this.closed) this.h.onMessage(e);
  }
  drop(reason = "dropped") {
    this.h.onClose(reason);
  }
}

function answer(time: FakeTime, o: Partial<TokenAnswer> = {}, stage: Stage = "shadow"): TokenAnswer {
  return {
    key: "jwt-1",
    channel: "room-1",
    topics: ["ai-stream", "default"],
    expiresAt: new Date(time.now() + 60000).toISOString(),
    version: 2,
    app: "ai-hero",
    room: "room-1",
    serverTime: time.now(),
    killSwitch: false,
    channels: [
      { name: "ai-stream", stage, topic: "ai-stream", realtimeChannel: "room-1", subscribed: true },
      { name: "default", stage, topic: "default", realtimeChannel: "room-1", subscribed: true },
    ],
    events: { "ai.message": "ai-stream" },
    sequence: { epoch: "ep", last: 0 },
    apiBaseUrl: "http://inngest.test",
    ...o,
  };
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

function msg(seq: number, stage: Stage = "shadow", ts = 0): Envelope {
  return { body: `c${seq}`, requestId: "r", name: "ai.message", sy: { id: `ep-${seq}`, epoch: "ep", seq, ts, stage, channel: "ai-stream" } };
}

/** A room over fakes: fetch answers from `tokens` in turn, transports are FakeConns. */
function rig(tokens: (() => Response)[], extra: Partial<ConnectRoomOptions> = {}) {
  const time = new FakeTime();
  const legacy: FakeConn[] = [];
  const realtime: FakeConn[] = [];
  const got: { e: Envelope; m: MessageMeta }[] = [];
  const statuses: Status[] = [];
  const requests: { url: string; init?: RequestInit }[] = [];
  let hidden = false;
  let visCb = () => {};
  const room = connectRoom({
    gateway: "http://gw.test/",
    app: "ai-hero",
    room: "room-1",
    grant: "grant-1",
    host: "party.test",
    clock: time,
    timers: time,
    random: () => 1,
    fetch: async (url, init) => {
      requests.push({ url, init });
      if (url.endsWith("/v1/receipts")) return json(202, { accepted: 1 });
      const next = tokens.shift();
      if (!next) throw new Error("no more token answers");
      return next();
    },
    sendBeacon: () => false,
    visibility: { hidden: () => hidden, subscribe: (cb) => ((visCb = cb), () => {}) },
    legacyFactory: (t, h) => {
      const c = new FakeConn(h, t);
      legacy.push(c);
      return { close: () => (c.closed = true) };
    },
    realtimeFactory: (t, h) => {
      const c = new FakeConn(h, t);
      realtime.push(c);
      return { close: () => (c.closed = true) };
    },
    onMessage: (e, m) => got.push({ e, m }),
    onStatus: (s) => statuses.push(s),
    ...extra,
  });
  const setHidden = (h: boolean) => {
    hidden = h;
    visCb();
  };
  return { time, room, legacy, realtime, got, statuses, requests, setHidden, tokens };
}

test("realtime_disabled: PartyKit only (fallback), asked again at the poll interval", async () => {
  const disabled = () => json(404, { error: { code: "realtime_disabled", message: "every channel is on PartyKit" } });
  const r = rig([disabled, disabled], { pollIntervalMs: 15000 });
  await flush();
  assert.equal(r.realtime.length, 0);
  assert.equal(r.legacy.length, 1);
  assert.equal(r.requests[0].url, "http://gw.test/v1/realtime/token?app=ai-hero&room=room-1");
  assert.equal((r.requests[0].init?.headers as Record<string, string>).Authorization, "Bearer grant-1");
  r.legacy[0].open();
  assert.equal(r.room.status, "fallback");
  await r.time.advance(14999);
  assert.equal(r.requests.length, 1);
  await r.time.advance(1);
  assert.equal(r.requests.length, 2);
  assert.deepEqual(r.statuses, ["fallback"]);
});

test("a token opens realtime with the answer's token; refreshed at half its life", async () => {
  const r = rig([]);
  r.tokens.push(() => json(200, answer(r.time)), () => json(200, answer(r.time, { key: "jwt-2" })));
  await flush();
  assert.equal(r.realtime.length, 1);
  assert.deepEqual(r.realtime[0].target as RealtimeTarget, {
    key: "jwt-1",
    channel: "room-1",
    topics: ["ai-stream", "default"],
    apiBaseUrl: "http://inngest.test",
  });
  r.realtime[0].open();
  r.legacy[0].open();
  assert.equal(r.room.status, "open");
  await r.time.advance(29999);
  assert.equal(r.requests.length, 1);
  await r.time.advance(1);
  assert.equal(r.requests.length, 2);
  assert.equal(r.realtime.length, 1, "same channel and topics: the open subscription is kept");
  assert.equal((r.realtime[0].target as RealtimeTarget).key, "jwt-1");
});

test("copies from both transports are delivered once, in order, with latency on the gateway's clock", async () => {
  const r = rig([]);
  r.tokens.push(() => json(200, answer(r.time, { serverTime: r.time.now() + 500 })));
  await flush();
  r.realtime[0].open();
  r.legacy[0].open();
  const ts = r.time.now();
  await r.time.advance(40);
  r.realtime[0].send(msg(2, "dual", ts)); // overtakes 1
  r.legacy[0].send(msg(1, "dual", ts));
  r.realtime[0].send(msg(1, "dual", ts));
  r.legacy[0].send(msg(2, "dual", ts));
  assert.deepEqual(r.got.map((g) => g.e.sy!.seq), [1, 2]);
  assert.deepEqual(r.got.map((g) => g.m.transport), ["legacy", "realtime"]);
  assert.equal(r.got[0].m.latencyMs, 540, "receivedAt + clock offset - ts");
  assert.equal(r.room.stats().duplicates, 2);
});

test("a PartyKit message past legacy makes a PartyKit-only client subscribe to realtime at once", async () => {
  const r = rig([]);
  r.tokens.push(() => json(404, { error: { code: "realtime_disabled", message: "legacy" } }), () => json(200, answer(r.time)));
  await flush();
  r.legacy[0].open();
  r.legacy[0].send(msg(1, "legacy"));
  await r.time.advance(2000);
  assert.equal(r.requests.length, 1, "a legacy message changes nothing");
  r.legacy[0].send(msg(2, "shadow"));
  await flush();
  assert.equal(r.requests.length, 2);
  assert.equal(r.realtime.length, 1);
  assert.deepEqual(r.got.map((g) => g.e.sy!.seq), [1, 2]);
});

test("a stage hint during a token request asks again right after it", async () => {
  let answerDisabled: (r: Response) => void = () => {};
  const r = rig([]);
  r.tokens.push(
    () => json(404, { error: { code: "realtime_disabled", message: "legacy" } }),
    () => json(200, answer(r.time)),
  );
  await flush();
  r.legacy[0].open();
  // The next poll is in flight (answered before the flip) when the hint comes.
  const slow = new Promise<Response>((res) => (answerDisabled = res));
  r.tokens.unshift(() => slow as unknown as Response);
  await r.time.advance(15000);
  assert.equal(r.requests.length, 2);
  r.legacy[0].send(msg(1, "shadow"));
  answerDisabled(json(404, { error: { code: "realtime_disabled", message: "legacy" } }));
  await flush();
  await flush();
  assert.equal(r.requests.length, 3, "asked again at once, not at the next poll");
  assert.equal(r.realtime.length, 1);
});

test("an expired grant is a clear error: status error, the gateway's message, nothing connected", async () => {
  const r = rig([() => json(401, { error: { code: "unauthorized", message: "room grant refused: expired" } })]);
  await flush();
  assert.equal(r.room.status, "error");
  assert.equal(r.room.error?.code, "unauthorized");
  assert.equal(r.room.error?.status, 401);
  assert.match(r.room.error!.message, /expired/);
  assert.equal(r.legacy[0].closed, true);
  assert.equal(r.realtime.length, 0);
  await r.time.advance(600000);
  assert.equal(r.requests.length, 1, "a fixed grant is not tried again");
});

test("a grant function is asked again after a refusal", async () => {
  let n = 0;
  const r = rig([], { grant: () => `grant-${++n}` });
  r.tokens.push(() => json(401, { error: { code: "unauthorized", message: "room grant refused: expired" } }), () => json(200, answer(r.time)));
  await flush();
  assert.equal(r.room.status, "error");
  await r.time.advance(1000);
  assert.equal((r.requests[1].init?.headers as Record<string, string>).Authorization, "Bearer grant-2");
  assert.equal(r.realtime.length, 1);
  r.realtime[0].open();
  assert.equal(r.room.status, "open");
  assert.equal(r.room.error, null);
});

test("realtime reconnects with growing backoff, capped", async () => {
  const r = rig([], { reconnectMinMs: 250, reconnectMaxMs: 5000 });
  r.tokens.push(() => json(200, answer(r.time, { expiresAt: new Date(r.time.now() + 3600000).toISOString() })));
  await flush();
  const waits: number[] = [];
  for (let i = 0; i < 7; i++) {
    const conn = r.realtime[r.realtime.length - 1];
    conn.drop();
    const before = r.realtime.length;
    let waited = 0;
    while (r.realtime.length === before) {
      await r.time.advance(50);
      waited += 50;
    }
    waits.push(waited);
  }
  // random() = 1: the ceiling of each attempt.
  assert.deepEqual(waits, [250, 500, 1000, 2000, 4000, 5000, 5000]);
  r.realtime[r.realtime.length - 1].open();
  r.realtime[r.realtime.length - 1].drop();
  let waited = 0;
  const before = r.realtime.length;
  while (r.realtime.length === before) {
    await r.time.advance(50);
    waited += 50;
  }
  assert.equal(waited, 250, "an open connection resets the backoff");
});

test("backoffDelay stays within [min/2, min(max, min*2^n)]", () => {
  const rand = prng(7);
  for (let attempt = 0; attempt < 12; attempt++) {
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(attempt, 250, 5000, rand);
      assert.ok(d >= 125 && d <= Math.min(5000, 250 * 2 ** attempt), `attempt ${attempt}: ${d}`);
    }
  }
});

test("a token about to expire is refreshed before a reconnect", async () => {
  const r = rig([], { refreshMaxMs: 3600000 });
  r.tokens.push(
    () => json(200, answer(r.time, { expiresAt: new Date(r.time.now() + 12000).toISOString() })),
    () => json(200, answer(r.time, { key: "jwt-2", expiresAt: new Date(r.time.now() + 60000).toISOString() })),
  );
  await flush();
  await r.time.advance(3000);
  r.realtime[0].drop();
  await r.time.advance(300);
  assert.equal(r.requests.length, 2);
  assert.equal((r.realtime[1].target as RealtimeTarget).key, "jwt-2");
});

test("hidden tab: paused, transports closed; visible again: reconnected, missed numbers skipped", async () => {
  const r = rig([]);
  r.tokens.push(() => json(200, answer(r.time)), () => json(200, answer(r.time, { sequence: { epoch: "ep", last: 30 } })));
  await flush();
  r.realtime[0].open();
  r.legacy[0].open();
  r.legacy[0].send(msg(1));
  r.setHidden(true);
  assert.equal(r.room.status, "paused");
  assert.equal(r.legacy[0].closed && r.realtime[0].closed, true);
  r.setHidden(false);
  await flush();
  assert.equal(r.legacy.length, 2);
  assert.equal(r.realtime.length, 2);
  r.legacy[1].open();
  r.realtime[1].open();
  assert.equal(r.room.status, "open");
  r.realtime[1].send(msg(32));
  r.legacy[1].send(msg(31));
  assert.deepEqual(r.got.map((g) => g.e.sy!.seq), [1, 31, 32]);
  assert.equal(r.room.stats().skipped, 29);
  assert.equal(r.room.stats().gaps, 0);
});

test("kill switch: realtime kept through the grace period, then closed; PartyKit carries", async () => {
  const disabled = () => json(404, { error: { code: "realtime_disabled", message: "kill switch" } });
  const r = rig([], { legacyGraceMs: 60000, pollIntervalMs: 15000 });
  r.tokens.push(() => json(200, answer(r.time, {}, "realtime")), disabled, disabled, disabled, disabled, disabled);
  await flush();
  r.realtime[0].open();
  r.legacy[0].open();
  await r.time.advance(30000); // the refresh says realtime_disabled
  assert.equal(r.room.status, "fallback");
  assert.equal(r.realtime[0].closed, false, "kept for a quick return");
  r.legacy[0].send(msg(1, "legacy"));
  assert.equal(r.got.length, 1);
  await r.time.advance(60000);
  assert.equal(r.realtime[0].closed, true);
});

test("new topics: the new subscription opens before the old one closes", async () => {
  const r = rig([]);
  r.tokens.push(
    () => json(200, answer(r.time, { topics: ["ai-stream"] })),
    () => json(200, answer(r.time, { key: "jwt-2", topics: ["ai-stream", "default"] })),
  );
  await flush();
  r.realtime[0].open();
  await r.room.refresh();
  assert.equal(r.realtime.length, 2);
  assert.equal(r.realtime[0].closed, false);
  r.realtime[1].open();
  assert.equal(r.realtime[0].closed, true);
});

test("receipts: which transport delivered each message and when, and the gaps, in one batch", async () => {
  const r = rig([], { gapTimeoutMs: 1000, receipts: { windowMs: 2000, flushMs: 5000 } });
  r.tokens.push(() => json(200, answer(r.time)));
  await flush();
  r.realtime[0].open();
  r.legacy[0].open();
  const ts = r.time.now();
  await r.time.advance(10);
  r.legacy[0].send(msg(1, "shadow", ts));
  await r.time.advance(15);
  r.realtime[0].send(msg(1, "shadow", ts));
  r.legacy[0].send(msg(3, "shadow", ts)); // 2 never comes
  await r.time.advance(1000 + 2000 + 5000);
  const sent = r.requests.filter((q) => q.url === "http://gw.test/v1/receipts");
  assert.equal(sent.length, 1);
  assert.equal(sent[0].init?.method, "POST");
  assert.equal((sent[0].init?.headers as Record<string, string>)["Content-Type"], "text/plain;charset=UTF-8");
  const body = JSON.parse(String(sent[0].init?.body));
  assert.equal(body.app, "ai-hero");
  assert.equal(body.room, "room-1");
  assert.equal(body.grant, "grant-1");
  const bySeq = Object.fromEntries(body.receipts.map((x: { seq: number }) => [x.seq, x]));
  assert.deepEqual(bySeq[1], { epoch: "ep", seq: 1, channel: "ai-stream", legacyMs: 10, realtimeMs: 25 });
  assert.deepEqual(bySeq[2], { epoch: "ep", seq: 2 });
  assert.equal(bySeq[3].legacyMs, 25, "arrival, not the wait for the gap");
  assert.equal(bySeq[3].realtimeMs, undefined);
  assert.equal(r.room.stats().receipts.sent, 3);
});

test("unsequenced app: each channel taken from its answering transport", async () => {
  const r = rig([]);
  r.tokens.push(() =>
    json(
      200,
      answer(r.time, {
        sequence: undefined,
        channels: [
          { name: "ai-stream", stage: "dual", topic: "ai-stream", realtimeChannel: "room-1", subscribed: true },
          { name: "default", stage: "shadow", topic: "default", realtimeChannel: "room-1", subscribed: true },
        ],
      }),
    ),
  );
  await flush();
  const plain = (name: string) => ({ body: 1, requestId: "x", name });
  for (const c of [r.legacy[0], r.realtime[0]]) {
    c.send(plain("ai.message"));
    c.send(plain("video.asset.ready"));
  }
  assert.deepEqual(
    r.got.map((g) => `${g.e.name}@${g.m.transport}`),
    ["video.asset.ready@legacy", "ai.message@realtime"],
  );
});

test("close sends nothing more and reports closed", async () => {
  const r = rig([]);
  r.tokens.push(() => json(200, answer(r.time)));
  await flush();
  r.room.close();
  assert.equal(r.room.status, "closed");
  assert.equal(r.realtime[0].closed && r.legacy[0].closed, true);
  r.legacy[0].send(msg(1));
  assert.equal(r.got.length, 0);
  assert.deepEqual(r.time.delays(), []);
});
