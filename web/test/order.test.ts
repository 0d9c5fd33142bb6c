import { test } from "node:test";
import assert from "node:assert/strict";
import { Sequencer, type Delivery } from "../src/order.js";
import type { Envelope, Stage, Transport } from "../src/types.js";
import { FakeTime, prng } from "./fake.js";

function env(epoch: string, seq: number, stage: Stage = "dual", name = "ai.message", requestId = "stream-1"): Envelope {
  return { body: `chunk ${seq}`, requestId, name, sy: { id: `${epoch}-${seq}`, epoch, seq, ts: 0, stage, channel: "ai-stream" } };
}

function rig(gapMs = 3000) {
  const time = new FakeTime();
  const got: Delivery[] = [];
  const gaps: string[] = [];
  const dups: string[] = [];
  const s = new Sequencer(
    {
      deliver: (d) => got.push(d),
      duplicate: (sy, t) => dups.push(`${sy.id}@${t}`),
      gap: (e, n) => gaps.push(`${e}-${n}`),
    },
    time,
    time,
    gapMs,
  );
  const seqs = () => got.map((d) => d.envelope.sy?.seq);
  return { time, got, gaps, dups, s, seqs };
}

test("copies of one message are delivered once, the second counted as a duplicate", () => {
  const r = rig();
  r.s.push(env("e", 1), "legacy");
  r.s.push(env("e", 1), "realtime");
  r.s.push(env("e", 2), "realtime");
  r.s.push(env("e", 2), "legacy");
  assert.deepEqual(r.seqs(), [1, 2]);
  assert.deepEqual(r.dups, ["e-1@realtime", "e-2@legacy"]);
  assert.equal(r.s.stats.duplicates, 2);
  assert.deepEqual(r.got.map((d) => d.transport), ["legacy", "realtime"]);
});

test("chunks that share a requestId are told apart by their id", () => {
  const r = rig();
  for (let i = 1; i <= 5; i++) r.s.push(env("e", i, "shadow", "ai.message", "one-answer"), "legacy");
  assert.deepEqual(r.seqs(), [1, 2, 3, 4, 5]);
  assert.equal(r.s.stats.duplicates, 0);
});

test("a message that overtook an earlier one waits for it", () => {
  const r = rig();
  r.s.push(env("e", 1), "legacy");
  r.s.push(env("e", 3), "realtime");
  r.s.push(env("e", 4), "realtime");
  assert.deepEqual(r.seqs(), [1]);
  assert.equal(r.s.waiting, 2);
  r.s.push(env("e", 2), "legacy");
  assert.deepEqual(r.seqs(), [1, 2, 3, 4]);
  assert.equal(r.s.waiting, 0);
  assert.deepEqual(r.time.delays(), [], "the gap timer is stopped once the gap filled");
});

test("a gap is given up on after the timeout, and a late copy is still delivered once", async () => {
  const r = rig(3000);
  r.s.push(env("e", 1), "legacy");
  r.s.push(env("e", 3), "legacy");
  await r.time.advance(2999);
  assert.deepEqual(r.seqs(), [1]);
  await r.time.advance(1);
  assert.deepEqual(r.seqs(), [1, 3]);
  assert.deepEqual(r.gaps, ["e-2"]);
  r.s.push(env("e", 2), "realtime");
  r.s.push(env("e", 2), "legacy");
  assert.deepEqual(r.seqs(), [1, 3, 2]);
  assert.equal(r.got[2].late, true);
  assert.deepEqual(r.s.stats, { delivered: 3, duplicates: 1, late: 1, gaps: 1, skipped: 0 });
});

test("the token answer's start makes an overtaking first message wait", () => {
  const r = rig();
  r.s.start("e", 10);
  r.s.push(env("e", 12), "realtime");
  assert.deepEqual(r.seqs(), []);
  r.s.push(env("e", 11), "legacy");
  assert.deepEqual(r.seqs(), [11, 12]);
});

test("a message accepted before the token but arriving after it is delivered in order", () => {
  const r = rig();
  r.s.start("e", 10);
  r.s.push(env("e", 9), "legacy"); // in flight on PartyKit when the token was answered
  r.s.push(env("e", 10), "legacy");
  r.s.push(env("e", 11), "realtime");
  assert.deepEqual(r.seqs(), [9, 10, 11]);
  assert.equal(r.s.stats.late, 0);
});

test("without a start an epoch begins at its first message; a start for a running epoch is ignored", () => {
  const r = rig();
  r.s.push(env("e", 41), "legacy");
  r.s.push(env("e", 42), "legacy");
  r.s.start("e", 44); // e.g. the token came while 43 and 44 were in flight on PartyKit
  r.s.push(env("e", 43), "legacy");
  r.s.push(env("e", 45), "realtime");
  r.s.push(env("e", 44), "legacy");
  assert.deepEqual(r.seqs(), [41, 42, 43, 44, 45]);
  assert.equal(r.s.stats.late, 0);
});

test("after a pause the numbers missed are skipped, not reported as gaps", async () => {
  const r = rig();
  for (let i = 1; i <= 5; i++) r.s.push(env("e", i), "legacy");
  r.s.resync();
  r.s.start("e", 20);
  r.s.push(env("e", 22), "realtime");
  assert.deepEqual(r.seqs(), [1, 2, 3, 4, 5]);
  r.s.push(env("e", 21), "legacy");
  assert.deepEqual(r.seqs(), [1, 2, 3, 4, 5, 21, 22]);
  assert.equal(r.s.stats.skipped, 15);
  assert.deepEqual(r.gaps, []);
  await r.time.advance(10000);
  assert.deepEqual(r.gaps, []);
});

test("a new epoch (gateway restart) starts fresh and the old one's buffer is not lost", () => {
  const r = rig();
  r.s.push(env("old", 7), "legacy");
  r.s.push(env("new", 1), "legacy");
  r.s.push(env("new", 2), "realtime");
  assert.deepEqual(r.got.map((d) => d.envelope.sy!.id), ["old-7", "new-1", "new-2"]);
});

test("unsequenced envelopes are delivered as they come", () => {
  const r = rig();
  r.s.push({ body: 1, requestId: "a", name: "x" }, "legacy");
  r.s.push({ body: 1, requestId: "a", name: "x" }, "legacy");
  assert.equal(r.got.length, 2);
});

// Every flip, simulated: each message goes to the transports of its stage
// (both in shadow and dual), each copy arriving after a random delay that
// differs per transport and per stage (the answering side fast, the
// off-path side slower), so copies overtake each other at every flip. Each
// transport keeps a room's order (the gateway publishes a room's messages
// one at a time per transport; PartyKit and the realtime fan-out are
// FIFO per connection), as the real ones do.
test("exactly once and in order through legacy, shadow, dual, realtime, back and the kill switch", async () => {
  const stages: Stage[] = ["legacy", "shadow", "dual", "realtime", "legacy" /* kill switch */, "realtime", "dual", "shadow", "legacy"];
  for (const seed of [1, 2, 3, 4, 5]) {
    const r = rig(3000);
    const rand = prng(seed);
    const arrivals: { at: number; e: Envelope; t: Transport }[] = [];
    let seq = 0;
    let bothCopies = 0;
    const lastAt: Record<Transport, number> = { legacy: 0, realtime: 0 };
    for (const [phase, stage] of stages.entries()) {
      for (let i = 0; i < 25; i++) {
        seq++;
        const accepted = phase * 2500 + i * 100;
        const e = env("ep", seq, stage, i % 5 === 0 ? "video.asset.ready" : "ai.message", `answer-${phase}`);
        const ts: Transport[] =
          stage === "legacy" ? ["legacy"] : stage === "realtime" ? ["realtime"] : ["legacy", "realtime"];
        if (ts.length === 2) bothCopies++;
        for (const t of ts) {
          const answering = (stage === "dual" || stage === "realtime") === (t === "realtime");
          const delay = answering ? 5 + rand() * 150 : 50 + rand() * 900;
          lastAt[t] = Math.max(lastAt[t], accepted + delay);
          arrivals.push({ at: lastAt[t], e, t });
        }
      }
    }
    arrivals.sort((a, b) => a.at - b.at);
    const start = r.time.now();
    for (const a of arrivals) {
      await r.time.advance(start + a.at - r.time.now());
      r.s.push(a.e, a.t);
    }
    await r.time.advance(10000);
    assert.deepEqual(r.seqs(), Array.from({ length: seq }, (_, i) => i + 1), `seed ${seed}: delivered out of order or not once`);
    assert.equal(r.s.stats.duplicates, bothCopies, `seed ${seed}: duplicates`);
    assert.equal(r.s.stats.gaps, 0);
    assert.equal(r.s.stats.late, 0);
  }
});
