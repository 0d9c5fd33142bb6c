/**
 * Wire types of Switchyard's HTTP API and envelope, as docs/api.md and
 * docs/openapi.yaml describe them.
 */

/** A channel's migration stage. */
export type Stage = "legacy" | "shadow" | "dual" | "realtime";

/** The two transports: PartyKit ("legacy") and Inngest Realtime. */
export type Transport = "legacy" | "realtime";

/**
 * The `sy` member of a sequenced app's envelope (`apps.X.sequence: true`):
 * what the client needs to deliver each message once and in order.
 */
export interface SequenceMeta {
  /** `${epoch}-${seq}`: the same on both copies of one message. */
  id: string;
  /** One room's run of sequence numbers on one gateway process. */
  epoch: string;
  /** 1, 2, 3... per room within an epoch, without gaps. */
  seq: number;
  /** When the gateway accepted the message, Unix milliseconds. */
  ts: number;
  /** The stage the message was published under. */
  stage: Stage;
  /** The configured channel of the message's event. */
  channel: string;
  /** True when the kill switch decided the stage. */
  killSwitch?: boolean;
}

/**
 * What both transports carry: the object apps send PartyKit today, plus
 * `sy` for sequenced apps. `body` is the app's JSON value.
 */
export interface Envelope<B = unknown> {
  body: B;
  requestId: string;
  name: string;
  sy?: SequenceMeta;
}

/** A realtime subscription token, as the Inngest client takes it. */
export interface RealtimeToken {
  key: string;
  channel: string;
  topics: string[];
  /** RFC 3339. */
  expiresAt: string;
}

/** One channel of a room in the token answer. */
export interface ChannelRoute {
  name: string;
  stage: Stage;
  topic: string;
  realtimeChannel: string;
  /** Whether the answer's token covers the channel's topic. */
  subscribed: boolean;
}

/**
 * The answer of GET/POST /v1/realtime/token (version 2). The token's
 * members are at the top level when the room is one realtime channel;
 * otherwise `tokens` lists one per realtime channel.
 */
export interface TokenAnswer extends Partial<RealtimeToken> {
  tokens?: RealtimeToken[];
  version: number;
  app: string;
  room: string;
  /** The gateway's clock, Unix milliseconds. */
  serverTime: number;
  killSwitch: boolean;
  channels: ChannelRoute[];
  /** Event name -> channel; other events are in "default". */
  events: Record<string, string>;
  /** Inngest's API base URL for the browser's WebSocket. */
  apiBaseUrl?: string;
  /** A sequenced room's epoch and last sequence number at answer time. */
  sequence?: { epoch: string; last: number };
}

/** Every error code the gateway answers (docs/api.md). */
export type ErrorCode =
  | "invalid_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "realtime_disabled"
  | "payload_too_large"
  | "invalid_room"
  | "rate_limited"
  | "upstream_failed"
  | "draining"
  | "internal"
  | "method_not_allowed";

/** The JSON error shape of every gateway error answer. */
export interface ErrorBody {
  error: {
    code: ErrorCode;
    message: string;
    transport?: Transport;
    requestId?: string;
  };
}

/** A gateway refusal or failure, or a client-side failure ("network"). */
export class SwitchyardError extends Error {
  /** The gateway's code, or "network" when no answer came. */
  readonly code: ErrorCode | "network" | "invalid_answer";
  /** The HTTP status, 0 for a network failure. */
  readonly status: number;
  /** Seconds to wait, from Retry-After. */
  readonly retryAfter?: number;

  constructor(code: SwitchyardError["code"], status: number, message: string, retryAfter?: number) {
    super(message);
    this.name = "SwitchyardError";
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }

  /**
   * True when asking again cannot help without the app acting (a refused
   * grant, an unknown app or room, a bad request).
   */
  get fatal(): boolean {
    return (
      this.code === "unauthorized" ||
      this.code === "forbidden" ||
      this.code === "not_found" ||
      this.code === "invalid_request" ||
      this.code === "invalid_room" ||
      this.code === "invalid_answer"
    );
  }
}

/** One message as POST /v1/receipts takes it. */
export interface ReceiptItem {
  epoch?: string;
  seq?: number;
  channel?: string;
  /** Receive latency through PartyKit, ms; absent when no copy came that way. */
  legacyMs?: number;
  /** Receive latency through Inngest Realtime, ms. */
  realtimeMs?: number;
}

/** The body of POST /v1/receipts. */
export interface ReceiptsRequest {
  app: string;
  room: string;
  grant: string;
  receipts: ReceiptItem[];
}
