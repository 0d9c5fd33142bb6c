import { PartySocket } from "partysocket";
import { subscribe } from "inngest/realtime";

/** Callbacks of one transport connection. */
export interface TransportHandlers {
  /** The connection is live: messages published from now on arrive. */
  onOpen(): void;
  /** One frame, already JSON-decoded (non-JSON frames are dropped). */
  onMessage(data: unknown): void;
  /** The connection ended (a legacy socket then reconnects by itself). */
  onClose(reason: string): void;
}

/** A live transport connection. */
export interface TransportHandle {
  close(): void;
}

/** What the PartyKit side connects to. */
export interface LegacyTarget {
  host: string;
  party: string;
  room: string;
}

/**
 * Opens the PartyKit side: one socket to the room that reconnects by
 * itself. The default is partysocket.
 */
export type LegacyFactory = (target: LegacyTarget, h: TransportHandlers) => TransportHandle;

/** What one realtime subscription needs: a token answer's token, and Inngest's base URL. */
export interface RealtimeTarget {
  key: string;
  channel: string;
  topics: string[];
  apiBaseUrl?: string;
}

/**
 * Opens one realtime subscription; it does not reconnect (the client
 * does, with a fresh token when needed). The default is the `inngest`
 * package's subscribe().
 */
export type RealtimeFactory = (target: RealtimeTarget, h: TransportHandlers) => TransportHandle;

/** partysocket options passed through (reconnect delays...). */
export type PartySocketOptions = Partial<ConstructorParameters<typeof PartySocket>[0]>;

/** The default PartyKit side: partysocket. */
export function partySocketFactory(extra: PartySocketOptions = {}): LegacyFactory {
  return (target, h) => {
    const ws = new PartySocket({
      minReconnectionDelay: 250,
      maxReconnectionDelay: 5000,
      ...extra,
      host: target.host,
      party: target.party,
      room: target.room,
    });
    ws.addEventListener("open", () => h.onOpen());
    ws.addEventListener("message", (e: MessageEvent) => {
      if (typeof e.data !== "string") return; // binary frames (Yjs) are not ours
      let v: unknown;
      try {
        v = JSON.parse(e.data);
      } catch {
        return; // "{id}: {msg}" relays and other text
      }
      h.onMessage(v);
    });
    ws.addEventListener("close", (e: CloseEvent) => h.onClose(e.reason || `closed (${e.code})`));
    return { close: () => ws.close() };
  };
}

/** The default realtime side: the inngest package's subscribe(). */
export const inngestRealtimeFactory: RealtimeFactory = (target, h) => {
  let closed = false;
  let sub: { close(reason?: string): void } | undefined;
  subscribe({ channel: target.channel, topics: target.topics, key: target.key, apiBaseUrl: target.apiBaseUrl, validate: false }).then(
    (stream) => {
      if (closed) {
        stream.close();
        return;
      }
      sub = stream;
      h.onOpen();
      const reader = (stream as unknown as ReadableStream<{ kind: string; data: unknown }>).getReader();
      void (async () => {
        let reason = "closed";
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            if (value && value.kind === "data") h.onMessage(value.data);
          }
        } catch (e) {
          reason = String((e as Error)?.message ?? e);
        }
        if (!closed) {
          closed = true;
          h.onClose(reason);
        }
      })();
    },
    (err: unknown) => {
      if (closed) return;
      closed = true;
      h.onClose(`connect failed: ${String((err as Error)?.message ?? err)}`);
    },
  );
  return {
    close() {
      closed = true;
      sub?.close("switchyard client closed");
    },
  };
};
