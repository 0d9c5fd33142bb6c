/**
 * @switchyard/client: a browser's side of a room served by Switchyard,
 * through PartyKit and Inngest Realtime as the room's stages say, each
 * message delivered once and in order. See docs/browser.md.
 */
export { connectRoom } from "./room.js";
export type { ConnectRoomOptions, MessageMeta, Room, RoomStats, Status } from "./room.js";
export { Sequencer } from "./order.js";
export type { Delivery, SequencerHooks, SequencerStats } from "./order.js";
export { ReceiptCollector } from "./receipts.js";
export type { ReceiptOptions, ReceiptSend, ReceiptStats } from "./receipts.js";
export { fetchToken, validateAnswer, tokensOf, errorOf } from "./token.js";
export type { FetchLike, TokenResult } from "./token.js";
export { partySocketFactory, inngestRealtimeFactory } from "./transports.js";
export type {
  LegacyFactory,
  LegacyTarget,
  PartySocketOptions,
  RealtimeFactory,
  RealtimeTarget,
  TransportHandle,
  TransportHandlers,
} from "./transports.js";
export { backoffDelay, documentVisibility, systemClock, systemTimers } from "./env.js";
export type { Clock, Timers, Visibility } from "./env.js";
export { SwitchyardError } from "./types.js";
export type {
  ChannelRoute,
  Envelope,
  ErrorBody,
  ErrorCode,
  RealtimeToken,
  ReceiptItem,
  ReceiptsRequest,
  SequenceMeta,
  Stage,
  TokenAnswer,
  Transport,
} from "./types.js";
