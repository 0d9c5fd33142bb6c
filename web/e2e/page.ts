// The browser test's page: one room through the built package (../dist),
// recording every message onMessage delivers and every raw copy each
// transport brought, for drive.mjs to read. Served by browser_test.go.
// With ?who=hook it renders a React component using useSwitchyardRoom
// instead, and exposes what the hook returned.
import { createElement, useEffect } from "react";
import { createRoot } from "react-dom/client";
import { connectRoom, inngestRealtimeFactory, partySocketFactory, type Envelope, type Transport } from "../dist/index.js";
import { useSwitchyardRoom } from "../dist/react.js";

interface Config {
  gateway: string;
  app: string;
  room: string;
  host: string;
  grants: Record<string, string>;
}

const cfg = (await (await fetch("/config.json")).json()) as Config;
const who = new URLSearchParams(location.search).get("who") ?? "a";
const records: unknown[] = [];
const copies: { id?: string; transport: Transport }[] = [];
const statuses: { status: string; code?: string; message?: string }[] = [];

function tap(transport: Transport) {
  return (data: unknown) => {
    const e = data as Envelope;
    if (e && typeof e === "object" && e.sy) copies.push({ id: e.sy.id, transport });
  };
}
const legacy = partySocketFactory();
const rt = inngestRealtimeFactory;

if (who === "hook") {
  const hookState: { status: string; seqs: (number | undefined)[]; last?: unknown } = { status: "connecting", seqs: [] };
  (window as unknown as { __hook: unknown }).__hook = hookState;
  const App = () => {
    const r = useSwitchyardRoom({
      gateway: cfg.gateway,
      app: cfg.app,
      room: cfg.room,
      grant: cfg.grants.a,
      host: cfg.host,
      receipts: false,
      historyLimit: 1000,
    });
    useEffect(() => {
      hookState.status = r.status;
      hookState.seqs = r.messages.all.map((m) => m.envelope.sy?.seq);
      hookState.last = r.messages.byChannel["ai-stream"]?.envelope.body;
    });
    return createElement("p", { id: "hook" }, `${r.status}: ${r.messages.all.length} messages`);
  };
  createRoot(document.body.appendChild(document.createElement("div"))).render(createElement(App));
} else {
  record();
}

function record() {
  const room = connectRoom({
    gateway: cfg.gateway,
    app: cfg.app,
    room: cfg.room,
    grant: cfg.grants[who],
    host: cfg.host,
    party: "main",
    receipts: { windowMs: 5000, flushMs: 2000 },
    // Ask the token endpoint every 2 s (not 30 s), so that the run also
    // sees realtime_disabled while the kill switch is on and at the end.
    refreshMaxMs: 2000,
    pollIntervalMs: 2000,
    legacyFactory: (t, h) => legacy(t, { ...h, onMessage: (d) => (tap("legacy")(d), h.onMessage(d)) }),
    realtimeFactory: (t, h) => rt(t, { ...h, onMessage: (d) => (tap("realtime")(d), h.onMessage(d)) }),
    onMessage(env, meta) {
      records.push({
        id: env.sy?.id,
        epoch: env.sy?.epoch,
        seq: env.sy?.seq,
        stage: env.sy?.stage,
        killSwitch: !!env.sy?.killSwitch,
        name: env.name,
        requestId: env.requestId,
        body: env.body,
        transport: meta.transport,
        late: meta.late,
        latencyMs: meta.latencyMs,
      });
    },
    onStatus(status, error) {
      statuses.push({ status, code: error?.code, message: error?.message });
    },
  });

  (window as unknown as { __sy: unknown }).__sy = { records, copies, statuses, room, hidden: () => document.visibilityState };
  document.title = `room ${cfg.room} (${who})`;
}
