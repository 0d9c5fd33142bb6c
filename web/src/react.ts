import { useCallback, useEffect, useRef, useState } from "react";
import { connectRoom, type ConnectRoomOptions, type MessageMeta, type Room, type RoomStats, type Status } from "./room.js";
import type { Envelope, SwitchyardError } from "./types.js";

/** One delivered message as the hook keeps it. */
export interface RoomMessage<B = unknown> {
  envelope: Envelope<B>;
  meta: MessageMeta;
}

/**
 * Options of useSwitchyardRoom: connectRoom's (host, party and room as
 * usePartySocket takes them), plus enabled and historyLimit as useRealtime
 * takes them. The connection is remade when gateway, app, room, host,
 * party or a string grant change; callbacks may change freely.
 */
export interface UseSwitchyardRoomOptions extends Omit<ConnectRoomOptions, "onStatus"> {
  /** false closes the connection (default true). */
  enabled?: boolean;
  /** How many messages `messages.all` keeps (default 100; 0 keeps none). */
  historyLimit?: number;
  onStatus?: ConnectRoomOptions["onStatus"];
}

/** What useSwitchyardRoom returns, shaped like useRealtime's result. */
export interface UseSwitchyardRoomResult<B = unknown> {
  status: Status;
  isPaused: boolean;
  error: SwitchyardError | null;
  messages: {
    /** The last historyLimit messages, oldest first, each once, in order. */
    all: RoomMessage<B>[];
    last: RoomMessage<B> | null;
    /** The last message of each channel. */
    byChannel: Record<string, RoomMessage<B>>;
  };
  stats: RoomStats | null;
  /** Empties messages. */
  reset(): void;
  /** The underlying connection (null while disabled). */
  room: Room | null;
}

/**
 * useSwitchyardRoom is connectRoom as a React hook: it connects on mount,
 * closes on unmount, and re-renders on each message and status change.
 */
export function useSwitchyardRoom<B = unknown>(options: UseSwitchyardRoomOptions): UseSwitchyardRoomResult<B> {
  const { enabled = true } = options;
  const latest = useRef(options);
  latest.current = options;
  const [status, setStatus] = useState<Status>(enabled ? "connecting" : "closed");
  const [error, setError] = useState<SwitchyardError | null>(null);
  const [messages, setMessages] = useState<UseSwitchyardRoomResult<B>["messages"]>({ all: [], last: null, byChannel: {} });
  const [room, setRoom] = useState<Room | null>(null);
  const grantKey = typeof options.grant === "string" ? options.grant : "";

  useEffect(() => {
    if (!enabled) {
      setStatus("closed");
      return;
    }
    const r = connectRoom({
      ...latest.current,
      onMessage(envelope, meta) {
        const m = { envelope: envelope as Envelope<B>, meta };
        setMessages((prev) => {
          const limit = latest.current.historyLimit ?? 100;
          const all = limit > 0 ? [...prev.all, m].slice(-limit) : [];
          const byChannel = meta.channel ? { ...prev.byChannel, [meta.channel]: m } : prev.byChannel;
          return { all, last: m, byChannel };
        });
        latest.current.onMessage?.(envelope, meta);
      },
      onStatus(s, e) {
        setStatus(s);
        setError(e);
        latest.current.onStatus?.(s, e);
      },
    });
    setRoom(r);
    setStatus(r.status);
    return () => {
      r.close();
      setRoom(null);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [enabled, options.gateway, options.app, options.room, options.host, options.party, grantKey]);

  const reset = useCallback(() => setMessages({ all: [], last: null, byChannel: {} }), []);
  return { status, isPaused: status === "paused", error, messages, stats: room ? room.stats() : null, reset, room };
}
