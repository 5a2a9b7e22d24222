// Types of the wsserver browser client (client.js / client.mjs); docs/CLIENTS.md.
// As a module this describes client.mjs; it also declares the global that client.js defines.

/** A message from the hub: `{type, data, id?, timestamp, ...}` (docs/PROTOCOL.md). */
export interface HubMessage<T = any> {
  type: string;
  data?: T;
  id?: string | number;
  timestamp?: number;
  error?: string;
  [field: string]: unknown;
}

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "disconnected";

/** The payload of a `state` event. */
export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** The close code of the connection that ended (1006 when there was no close frame), or null. */
  code: number | null;
  reason: string;
  /** When reconnecting: milliseconds until the next attempt. */
  delay: number | null;
  /** When reconnecting: the attempt's number since the last stable connection, from 1. */
  attempt: number;
}

export interface ClientOptions {
  /** A JWT, sent in the first message (`auth`, or `register` with deviceId/deviceInfo). */
  token?: string;
  /** Gives a token: first when no `token` is given, after a 4001 close (once), on `token_expiring`. */
  getToken?: () => string | Promise<string>;
  deviceId?: string;
  deviceInfo?: Record<string, unknown>;
  /** One connection for all tabs of this origin with the same URL and user. */
  shared?: boolean;
  /** Frames that may wait while disconnected (default 1000). */
  queueLimit?: number;
  /** The highest inbox seq the application has (saved from `lastSeq`); null: only what is undelivered. */
  lastSeq?: number | null;
  /** Send `message_delivered` for every direct message handed out (default false). */
  autoAck?: boolean;
  /** Milliseconds (default 10000). */
  requestTimeout?: number;
  /** Reconnect delays: random(0, min(backoffCap, backoffBase * 2^n)) ms (defaults 500, 30000). */
  backoffBase?: number;
  backoffCap?: number;
  /** Failed reconnects in a row before giving up (default null: never). */
  maxRetries?: number | null;
  /** Connected this long (ms) restarts the backoff (default 10000). */
  stableAfter?: number;
  /** No data for this long (ms) sends a `ping`; 0 turns it off (default 65000). */
  liveness?: number;
  /** ...which must bring data within this long (ms), else the connection is replaced (default 5000). */
  probeTimeout?: number;
  /** From opening the socket to the hub's `connected` (ms, default 10000). */
  connectTimeout?: number;
  /** The SharedWorker script (default: client-worker.js next to client.js, else on the hub). */
  workerUrl?: string;
  /** The backoff's random source in [0, 1) (not in shared mode; default Math.random). */
  random?: () => number;
}

/** Every failure: `name` is RequestError (an `error` reply: `code`, `field`, `ref`, `reply`),
 * RequestTimeout, QueueFull, ConnectionLost or ClientClosed (`code`, `reason`). */
export declare class WsServerError extends Error {
  name: "RequestError" | "RequestTimeout" | "QueueFull" | "ConnectionLost" | "ClientClosed";
  code: number | string | null;
  reason: string;
  field?: string | null;
  ref?: string | null;
  reply?: HubMessage;
}

/** The `message_sent` data. */
export interface MessageSent {
  message_id: number;
  client_msg_id: string;
  seq: number;
  status: string;
  time: number;
  duplicate?: boolean;
  [field: string]: unknown;
}

declare class Client {
  constructor(url: string, options?: ClientOptions);
  readonly state: ConnectionState;
  /** The highest inbox seq handed to the application: save it, pass it back as `lastSeq`. */
  readonly lastSeq: number | null;
  /** The `connected` data of the connection. */
  readonly user: Record<string, any> | null;
  /** `fn` for every message of `type` ("*": every message); returns a function that removes it. */
  on(type: "state", fn: (change: StateChange) => void): () => void;
  on(type: string, fn: (msg: HubMessage) => void): () => void;
  off(type: string, fn: (arg: any) => void): void;
  /** Queue a frame (throws QueueFull when the queue is full; in shared mode a full queue drops it with a warning). */
  send(type: string, data?: unknown): void;
  /** A frame with an `id`; resolves with the reply. `resend`: send again after a reconnect (only for what the hub de-duplicates). */
  request(type: string, data?: unknown, options?: { timeout?: number | null; resend?: boolean }): Promise<HubMessage>;
  /** A direct message with a `client_msg_id`; sent again after reconnects until the hub confirms it. No timeout by default. */
  sendMessage(toUserId: string | number | null, text: string, extra?: Record<string, unknown>, options?: { timeout?: number | null }): Promise<MessageSent>;
  markDelivered(messageId: number): void;
  markRead(messageId: number): void;
  /** Joined again after every reconnect. */
  joinRoom(room: string, options?: { timeout?: number | null }): Promise<HubMessage>;
  leaveRoom(room: string, options?: { timeout?: number | null }): Promise<HubMessage>;
  /** Resolves with `room_message_ack`. A string is sent as `{text}`. */
  roomMessage(room: string, data: string | Record<string, unknown>, options?: { timeout?: number | null }): Promise<HubMessage>;
  /** Close (1000); in shared mode this tab only: the connection stays while another tab uses it. */
  close(): void;
  /** The default SharedWorker script URL. */
  static workerUrl: string | null;
  static Error: typeof WsServerError;
  static VERSION: string;
}

export { Client as WsServerClient };
export default Client;

declare global {
  /** Defined by client.js when loaded as a script (or imported for its effect). */
  var WsServerClient: typeof Client;
}
