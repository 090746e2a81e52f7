/**
 * rtcs.js: the JavaScript client of rtcs (wire protocol version 1).
 *
 * One ES module, no dependencies, no build step. It runs in browsers (the
 * global `WebSocket`) and in Node >= 20 (pass a WebSocket constructor, e.g.
 * the `ws` package's, as the `WebSocket` option; Node 22 has a global one).
 * rtcs serves this file at `GET /client/rtcs.js`; docs/client-js.md is the
 * guide.
 *
 *     import { Client } from "/client/rtcs.js";
 *     const c = new Client("ws://127.0.0.1:8765/ws", { token });
 *     await c.connect();
 *     await c.subscribe("chat.>");
 *     await c.publish("chat.general", { text: "hi" });   // resolves after the ack
 *     for await (const msg of c.messages()) console.log(msg.topic ?? msg.room, msg.data);
 *
 * What it does for the application (docs/protocol.md names every rule):
 *
 * - Authenticates with the `rtcs.bearer.<token>` WebSocket subprotocol
 *   (browsers cannot set headers), or with a first `auth` frame
 *   (`authMode: "frame"`), or with nothing (`token` omitted: a cookie).
 * - One method per client frame (subscribe, unsubscribe, publish, send, join,
 *   leave, broadcast, presence, ping). Each sends the frame with an `id` and
 *   resolves with the reply frame, or rejects with a typed `RtcsError`
 *   (`code`, `message`): a subclass per protocol error code, plus the
 *   client's own (`RequestTimeout`, `ConnectionLost`, `ConnectionClosed`,
 *   `AuthFailed`, `GaveUp`).
 * - Reconnects on its own: exponential backoff with full jitter and a cap,
 *   giving up after `maxAttempts` failed attempts in a row or `maxElapsed`
 *   ms; never after the close codes that mean "don't" (`CLOSE_CODES`).
 * - Resumes its session (`session` + `last_seq`): `messages()` yields every
 *   message exactly once, in `seq` order, across drops (duplicates are
 *   dropped by `seq`). When the server answers `resumed: false` it emits
 *   `sessionlost`, then subscribes and joins again what it had.
 * - Refreshes the token before its `exp` (read from the JWT payload, never
 *   verified: the client holds no key) with an `auth` frame on the open
 *   connection, when `token` is a function; every reconnect asks it again.
 * - Surfaces the server's `status` (degraded mode) frames as events.
 * - Delivery receipts (`subscribe(topic, {receipts: true})`): a message the
 *   application took from `messages()` (with `maxQueue: 0`, one handed to the
 *   `message` listeners) is acknowledged with a cumulative `received` frame,
 *   one per `receiptDelay` ms at most, at once after `receiptBatch` messages.
 *   A redelivered copy of a message the client holds is dropped and
 *   acknowledged again; a redelivered message from before what this client
 *   saw of the session (a new page resuming with `session` and `lastSeq`) is
 *   handed on, `redelivered: true`.
 *
 * Close codes (`CLOSE_CODES`, `closeAction`): "resume" reconnects and
 * resumes; "later" does the same after at least `laterDelay` ms; "auth"
 * reconnects once with a fresh token when `token` is a function and stops
 * otherwise (or when the fresh token fails too); "stop" ends the client.
 * Unknown codes 4000-4999 are "later", other unknown codes "resume".
 *
 * Requests in flight when the connection drops: `subscribe`, `unsubscribe`,
 * `join`, `leave`, `presence` and `ping` are sent again after the reconnect
 * (they are idempotent); `publish` is sent again with the same `id` when the
 * session was resumed (the server de-duplicates publish ids per session, so
 * it is delivered once) and rejected with `ConnectionLost` (`maybeDelivered`)
 * when the session was lost; `send` and `broadcast` (not de-duplicated) are
 * rejected with `ConnectionLost` at once. Requests made while disconnected
 * wait for the next connection, within their timeout.
 */

/** The wire protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;
/** The subprotocol rtcs selects (docs/protocol.md, "Authentication"). */
export const SUBPROTOCOL = "rtcs.v1";
/** Prefix of the subprotocol that carries the token. */
export const BEARER_PREFIX = "rtcs.bearer.";

// -- errors -------------------------------------------------------------------------------

/**
 * The base of every error this client rejects with or emits.
 *
 * Tree:
 *
 *     RtcsError (code)
 *       protocol errors, from an `error` frame (`id` is the request's):
 *         BadRequest "bad_request", BadTopic "bad_topic", Forbidden "forbidden",
 *         Offline "offline", RateLimited "rate_limited", TooLarge "too_large",
 *         LimitExceeded "limit", Unavailable "unavailable", InternalError "internal"
 *         (an unknown code: a plain RtcsError with that code)
 *       RequestTimeout "timeout"         no reply within the request timeout
 *       ConnectionLost "connection_lost" the connection dropped with the request
 *                                        in flight (`maybeDelivered`)
 *       ConnectionClosed "closed"        the client is closed or stopped (`closeCode`)
 *         AuthFailed "auth_failed"       the token was refused (4001 or HTTP 401)
 *       GaveUp "gave_up"                 reconnecting gave up (`attempts`, `cause`)
 *       SessionLost "session_lost"       the `sessionlost` event's value
 *
 * TooLarge is also raised locally, before sending, for a frame over
 * `maxMessageSize` (the server would close the connection with 1009).
 */
export class RtcsError extends Error {
  /**
   * @param {string} code a protocol error code or one of the client's
   * @param {string} message
   * @param {{id?: string|number|null, frame?: object, cause?: unknown}} [details]
   */
  constructor(code, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "RtcsError";
    this.code = code;
    /** The id of the request this error answers, or null. */
    this.id = details.id ?? null;
    /** The server's `error` frame, when there was one. */
    this.frame = details.frame ?? null;
  }
}

/** A malformed frame, an unknown type, a missing or ill-typed field, a bad room name. */
export class BadRequest extends RtcsError {
  constructor(message, details) {
    super("bad_request", message, details);
    this.name = "BadRequest";
  }
}

/** A topic or pattern that breaks the topic rules, or a publish to a pattern. */
export class BadTopic extends RtcsError {
  constructor(message, details) {
    super("bad_topic", message, details);
    this.name = "BadTopic";
  }
}

/** The user's roles do not allow this request. */
export class Forbidden extends RtcsError {
  constructor(message, details) {
    super("forbidden", message, details);
    this.name = "Forbidden";
  }
}

/** The target of a `send` has no live connection. */
export class Offline extends RtcsError {
  constructor(message, details) {
    super("offline", message, details);
    this.name = "Offline";
  }
}

/** Too many frames or bytes: slow down. */
export class RateLimited extends RtcsError {
  constructor(message, details) {
    super("rate_limited", message, details);
    this.name = "RateLimited";
  }
}

/** A frame over the size limit (checked locally before sending). */
export class TooLarge extends RtcsError {
  constructor(message, details) {
    super("too_large", message, details);
    this.name = "TooLarge";
  }
}

/** Too many subscriptions or rooms on this connection (code `limit`). */
export class LimitExceeded extends RtcsError {
  constructor(message, details) {
    super("limit", message, details);
    this.name = "LimitExceeded";
  }
}

/** A backend needed for the request is down; retry later. */
export class Unavailable extends RtcsError {
  constructor(message, details) {
    super("unavailable", message, details);
    this.name = "Unavailable";
  }
}

/** A bug in rtcs; the request may be retried (code `internal`). */
export class InternalError extends RtcsError {
  constructor(message, details) {
    super("internal", message, details);
    this.name = "InternalError";
  }
}

/** No reply arrived within the request's timeout. */
export class RequestTimeout extends RtcsError {
  constructor(message, details) {
    super("timeout", message, details);
    this.name = "RequestTimeout";
  }
}

/**
 * The connection dropped while the request was in flight. `maybeDelivered`
 * is true when the server may have acted on it (it had been sent).
 */
export class ConnectionLost extends RtcsError {
  constructor(message, details = {}) {
    super("connection_lost", message, details);
    this.name = "ConnectionLost";
    this.maybeDelivered = details.maybeDelivered ?? true;
  }
}

/**
 * The client is closed: by `close()`, or stopped by a close code that means
 * "don't reconnect" (`closeCode`, `reason`).
 */
export class ConnectionClosed extends RtcsError {
  constructor(message, details = {}) {
    super(details.code ?? "closed", message, details);
    this.name = "ConnectionClosed";
    this.closeCode = details.closeCode ?? null;
    this.reason = details.reason ?? "";
  }
}

/** The server refused the token: close code 4001 or HTTP 401 at the handshake (`status`). */
export class AuthFailed extends ConnectionClosed {
  constructor(message, details = {}) {
    super(message, { ...details, code: "auth_failed" });
    this.name = "AuthFailed";
    this.status = details.status ?? null;
  }
}

/**
 * Reconnecting gave up: `attempts` failed in a row over `elapsed` ms;
 * `cause` is the last failure.
 */
export class GaveUp extends RtcsError {
  constructor(message, details = {}) {
    super("gave_up", message, details);
    this.name = "GaveUp";
    this.attempts = details.attempts ?? 0;
    this.elapsed = details.elapsed ?? 0;
  }
}

/**
 * The server could not resume the session (`resumed: false`): messages
 * delivered to `previousSession` after `lastSeq` are lost. The client goes on
 * in `sessionId`, subscribing to `subscriptions` and joining `rooms` again.
 */
export class SessionLost extends RtcsError {
  constructor(details) {
    super("session_lost", `session ${details.previousSession} could not be resumed`);
    this.name = "SessionLost";
    this.previousSession = details.previousSession;
    this.sessionId = details.sessionId;
    this.lastSeq = details.lastSeq;
    this.subscriptions = details.subscriptions;
    this.rooms = details.rooms;
  }
}

/** The class of each protocol error code (docs/protocol.md, "Error codes"). */
export const ERROR_CLASSES = Object.freeze({
  bad_request: BadRequest,
  bad_topic: BadTopic,
  forbidden: Forbidden,
  offline: Offline,
  rate_limited: RateLimited,
  too_large: TooLarge,
  limit: LimitExceeded,
  unavailable: Unavailable,
  internal: InternalError,
});

/**
 * The typed error of a server `error` frame; an unknown code gives a plain
 * RtcsError with that code.
 * @param {{code?: unknown, message?: unknown, id?: unknown}} frame
 * @returns {RtcsError}
 */
export function errorFromFrame(frame) {
  const code = typeof frame.code === "string" ? frame.code : "internal";
  const message = typeof frame.message === "string" ? frame.message : code;
  const details = { id: frame.id ?? null, frame };
  const Class = Object.hasOwn(ERROR_CLASSES, code) ? ERROR_CLASSES[code] : null;
  return Class ? new Class(message, details) : new RtcsError(code, message, details);
}

// -- close codes, backoff, tokens, seq: pure functions -------------------------------------

/**
 * Every close code rtcs uses (docs/protocol.md, "Limits and close codes"),
 * what it means and what this client does:
 * "resume" (reconnect and resume), "later" (the same, waiting at least
 * `laterDelay` ms), "auth" (a fresh token from a token function, once; else
 * stop), "stop" (no reconnect: the client ends with ConnectionClosed).
 */
export const CLOSE_CODES = Object.freeze({
  1000: { meaning: "normal close: the session was resumed by another connection", action: "stop" },
  1001: { meaning: "server shutting down", action: "resume" },
  1003: { meaning: "binary frame on the JSON protocol", action: "stop" },
  1005: { meaning: "closed without a code", action: "resume" },
  1006: { meaning: "connection dropped without a close frame", action: "resume" },
  1007: { meaning: "a text frame that is not valid UTF-8", action: "stop" },
  1009: { meaning: "frame larger than the maximum message size", action: "stop" },
  1011: { meaning: "internal error", action: "resume" },
  1012: { meaning: "service restart", action: "resume" },
  1013: { meaning: "overloaded or backend unavailable", action: "later" },
  1014: { meaning: "bad gateway (a proxy)", action: "resume" },
  4001: { meaning: "authentication failed, missing or expired (or revoked)", action: "auth" },
  4003: { meaning: "forbidden (origin or account blocked)", action: "stop" },
  4008: { meaning: "too slow: the outbound queue overflowed", action: "resume" },
  4029: { meaning: "rate limit or error budget exhausted, or a crash penalty", action: "later" },
  4031: { meaning: "connection limit reached", action: "later" },
});

/**
 * What to do after the connection closed with `code` (see CLOSE_CODES).
 * @param {number} code
 * @returns {"resume"|"later"|"auth"|"stop"}
 */
export function closeAction(code) {
  const known = Object.hasOwn(CLOSE_CODES, code) ? CLOSE_CODES[code] : null;
  if (known) return known.action;
  return code >= 4000 && code <= 4999 ? "later" : "resume";
}

/**
 * What to do after the handshake was refused with HTTP `status` (only known
 * where the WebSocket implementation reports it, e.g. Node's `ws`): 401 is
 * "auth", 429 and 503 "later", 400, 403 and 404 "stop", anything else "resume".
 * @param {number} status
 * @returns {"resume"|"later"|"auth"|"stop"}
 */
export function statusAction(status) {
  if (status === 401) return "auth";
  if (status === 429 || status === 503) return "later";
  if (status === 400 || status === 403 || status === 404) return "stop";
  return "resume";
}

/**
 * The wait before reconnect attempt `attempt` (1, 2, ...): exponential
 * backoff with full jitter, a uniform draw in
 * [0, min(maxDelay, initialDelay * factor ** (attempt - 1))).
 * @param {number} attempt
 * @param {{initialDelay?: number, maxDelay?: number, factor?: number}} [policy] in ms
 * @param {() => number} [random] uniform in [0, 1)
 * @returns {number} ms
 */
export function backoffDelay(attempt, policy = {}, random = Math.random) {
  const { initialDelay = 500, maxDelay = 30000, factor = 2 } = policy;
  const exponent = Math.max(0, Math.min(attempt - 1, 64));
  const ceiling = Math.min(maxDelay, initialDelay * factor ** exponent);
  return Math.floor(random() * ceiling);
}

/**
 * The payload of a JWT, decoded (base64url JSON) but NOT verified; null
 * when `token` is not a JWT with a JSON object payload.
 * @param {unknown} token
 * @returns {Record<string, unknown>|null}
 */
export function decodeJwtPayload(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3 || !/^[A-Za-z0-9_-]+$/.test(parts[1])) return null;
  try {
    let b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    b64 += "=".repeat((4 - (b64.length % 4)) % 4);
    const binary = atob(b64);
    const bytes = Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
    const payload = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
    return payload !== null && typeof payload === "object" && !Array.isArray(payload)
      ? payload
      : null;
  } catch {
    return null;
  }
}

/**
 * When to refresh a token that expires at `exp` (seconds since the epoch):
 * `before` ms ahead of it, or halfway through what is left when that is
 * shorter. Null when `exp` is not a finite number.
 * @param {unknown} exp
 * @param {number} now ms since the epoch
 * @param {number} before ms
 * @returns {number|null} ms from now
 */
export function refreshDelay(exp, now, before) {
  if (typeof exp !== "number" || !Number.isFinite(exp)) return null;
  const remaining = exp * 1000 - now;
  if (remaining <= 0) return 0;
  return Math.max(0, remaining - Math.min(before, remaining / 2));
}

/**
 * The highest `seq` handed to the application, and the rule that keeps
 * delivery exactly-once and in order: a message is new only when its `seq`
 * is above every `seq` seen in this session (seqs may skip, never repeat).
 */
export class SeqTracker {
  /** @param {number} [lastSeq] */
  constructor(lastSeq = 0) {
    this.lastSeq = lastSeq;
  }

  /**
   * True (and remembered) if `seq` is new; false for a duplicate or a
   * message older than one already delivered.
   * @param {number} seq
   */
  accept(seq) {
    if (seq <= this.lastSeq) return false;
    this.lastSeq = seq;
    return true;
  }

  /** A new session: its seqs start again at 1. */
  reset() {
    this.lastSeq = 0;
  }
}

// -- messages -----------------------------------------------------------------------------

/** One `message` frame: a topic, room, global, filtered or direct delivery. */
export class Message {
  /** @param {Record<string, any>} frame */
  constructor(frame) {
    /** Position in the session: 1, 2, 3, ... */
    this.seq = typeof frame.seq === "number" ? frame.seq : null;
    /** The topic (topic deliveries), else null. */
    this.topic = typeof frame.topic === "string" ? frame.topic : null;
    /** The room (room broadcasts; "*" for global and filtered ones), else null. */
    this.room = typeof frame.room === "string" ? frame.room : null;
    /** The sender's user id (the frame's `from`), when known, else null. */
    this.sender = typeof frame.from === "string" ? frame.from : null;
    this.data = frame.data;
    /** When rtcs routed it, ms since the epoch. */
    this.ts = typeof frame.ts === "number" ? frame.ts : null;
    /** True when delivered again (delivery receipts). */
    this.redelivered = frame.redelivered === true;
    /** The whole frame, for fields this class does not name. */
    this.frame = frame;
  }

  /** True for a direct message (`send`): neither topic nor room. */
  get direct() {
    return this.topic === null && this.room === null;
  }
}

/**
 * The messages not yet read through `messages()`, bounded: past `limit`
 * the oldest is dropped (`onDrop` tells the client). Iterators compete for
 * its items; `end(error)` ends them once the items are read.
 */
class MessageQueue {
  constructor(limit, onDrop) {
    this.limit = limit;
    this.onDrop = onDrop;
    this.items = [];
    this.head = 0;
    this.waiters = [];
    this.ended = false;
    this.error = null;
  }

  get size() {
    return this.items.length - this.head;
  }

  push(item) {
    const waiter = this.waiters.shift();
    if (waiter) {
      waiter.resolve({ value: item, done: false });
      return;
    }
    if (this.limit <= 0) return;
    this.items.push(item);
    if (this.size > this.limit) this.onDrop(this.shiftItem());
  }

  shiftItem() {
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head += 1;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** The next item, waiting for one; rejects with the end's error, resolves done on a clean end. */
  take(waiter) {
    if (this.size > 0) return Promise.resolve({ value: this.shiftItem(), done: false });
    if (this.ended) {
      if (this.error) return Promise.reject(this.error);
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      waiter.resolve = resolve;
      waiter.reject = reject;
      this.waiters.push(waiter);
    });
  }

  cancel(waiter) {
    const at = this.waiters.indexOf(waiter);
    if (at >= 0) {
      this.waiters.splice(at, 1);
      waiter.resolve({ value: undefined, done: true });
    }
  }

  end(error) {
    this.ended = true;
    this.error = error ?? null;
    for (const waiter of this.waiters.splice(0)) {
      if (this.error) waiter.reject(this.error);
      else waiter.resolve({ value: undefined, done: true });
    }
  }

  reopen() {
    this.ended = false;
    this.error = null;
  }
}

// -- events -------------------------------------------------------------------------------

/** A tiny event emitter: `on`, `once`, `off`, and `waitFor` (a promise). */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /**
   * Call `listener(value)` on every `type` event; returns a function that removes it.
   * @param {string} type
   * @param {(value: any) => void} listener
   * @returns {() => void}
   */
  on(type, listener) {
    if (typeof listener !== "function") {
      throw new TypeError(`listener for "${type}" must be a function`);
    }
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => this.off(type, listener);
  }

  /** Like `on`, for the next `type` event only. */
  once(type, listener) {
    const off = this.on(type, (value) => {
      off();
      listener(value);
    });
    return off;
  }

  /** Remove `listener` from `type`. */
  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
  }

  /**
   * The value of the next `type` event that passes `filter`; rejects with
   * RequestTimeout after `timeout` ms (default 10 s).
   * @param {string} type
   * @param {{timeout?: number, filter?: (value: any) => boolean}} [options]
   * @returns {Promise<any>}
   */
  waitFor(type, { timeout = 10000, filter } = {}) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new RequestTimeout(`no "${type}" event within ${timeout} ms`));
      }, timeout);
      const off = this.on(type, (value) => {
        if (filter && !filter(value)) return;
        clearTimeout(timer);
        off();
        resolve(value);
      });
    });
  }

  /**
   * Call the listeners of `type`. A listener that throws does not stop the
   * others: its exception is emitted as an `error` event (or, from an
   * `error` listener, written to the console).
   */
  emit(type, value) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(value);
      } catch (err) {
        if (type === "error") console.error("rtcs: an error listener threw", err);
        else this.emit("error", err);
      }
    }
  }
}

// -- the client ---------------------------------------------------------------------------

/**
 * The client's states and the events that move it (an unknown pair is a bug
 * and throws, naming both):
 *
 *     idle           --connect--> connecting      (close: closed)
 *     connecting     --open-->    authenticating  (the socket is open)
 *     authenticating --welcome--> active
 *     connecting, authenticating, active --drop--> waiting (a reconnect is due)
 *     waiting        --retry-->   connecting
 *     any but idle/closed --stop--> closed (gave up, or a close code that means stop)
 *     connecting, authenticating, active, waiting --close--> closing --stop--> closed
 *     closed         --connect--> connecting      (connect() again)
 */
const TRANSITIONS = Object.freeze({
  idle: { connect: "connecting", close: "closed" },
  connecting: { open: "authenticating", drop: "waiting", stop: "closed", close: "closing" },
  authenticating: { welcome: "active", drop: "waiting", stop: "closed", close: "closing" },
  active: { drop: "waiting", stop: "closed", close: "closing" },
  waiting: { retry: "connecting", stop: "closed", close: "closing" },
  closing: { stop: "closed", close: "closing", drop: "closing" },
  closed: { connect: "connecting", close: "closed", stop: "closed" },
});

/** How each request is treated when the connection drops with it in flight (module docstring). */
const RETRY = Object.freeze({
  subscribe: "always",
  unsubscribe: "always",
  join: "always",
  leave: "always",
  presence: "always",
  ping: "always",
  publish: "if-resumed",
  send: "never",
  broadcast: "never",
  auth: "never",
});

const DEFAULTS = Object.freeze({
  authMode: "subprotocol",
  requestTimeout: 10000,
  connectTimeout: 10000,
  closeTimeout: 2000,
  refreshBefore: 60000,
  heartbeat: true,
  heartbeatTimeout: 10000,
  maxMessageSize: 65536,
  maxQueue: 10000,
  laterDelay: 5000,
  receiptDelay: 50,
  receiptBatch: 100,
});

/** The session epoch each message arrived in (receipts never cross a lost session). */
const EPOCHS = new WeakMap();

const RECONNECT_DEFAULTS = Object.freeze({
  initialDelay: 500,
  maxDelay: 30000,
  factor: 2,
  maxAttempts: Infinity,
  maxElapsed: 300000,
});

const HANDSHAKE_STATUS = /Unexpected server response: (\d{3})/;

/**
 * An rtcs client: one WebSocket at a time, reconnected and resumed on its own.
 *
 * Events (`on(type, listener)`, `once`, `off`, `waitFor(type, {timeout, filter})`):
 *
 * - `connected` {connectionId, sessionId, user, roles, resumed, replayed,
 *   degraded, server, welcome}: a `welcome` (first, or after a reconnect)
 * - `disconnected` {code, reason, reconnect}: an established connection ended
 * - `reconnecting` {attempt, delay, code, reason}: the next attempt is due in `delay` ms
 * - `sessionlost` SessionLost: the session could not be resumed; the client
 *   subscribes and joins again, then emits `restored` {subscriptions, rooms, failed}
 * - `status` {degraded, reason}: the server entered or left degraded mode
 * - `refreshed` {exp}: the connection now runs on a fresh token
 * - `message` Message (also queued for `messages()`)
 * - `presence` {room, event, user}
 * - `unsubscribed` {topic, reason} / `left` {room, reason}: dropped by the server
 * - `overflow` {dropped}: the `messages()` queue was full and dropped its oldest message
 * - `error` RtcsError: errors without a caller (an `error` frame without a
 *   known id, a failed restore or refresh, a listener that threw)
 * - `gaveup` GaveUp, then `closed`
 * - `closed` {code, reason, error}: the client stopped (error is null after close())
 */
export class Client extends Emitter {
  /**
   * @param {string} url `ws://` or `wss://` URL of the rtcs endpoint (in a
   *   browser also a path such as "/ws", resolved against the page)
   * @param {object} [options]
   * @param {string|(() => string|Promise<string>)} [options.token] a JWT, or a
   *   function returning one (called for every connection attempt and
   *   before each `exp`); omitted: authenticate with the cookie
   * @param {Function} [options.WebSocket] the WebSocket constructor
   *   (default: globalThis.WebSocket)
   * @param {"subprotocol"|"frame"} [options.authMode] where the token goes
   * @param {number} [options.requestTimeout] ms per request (10000)
   * @param {number} [options.connectTimeout] ms from opening the socket to `welcome` (10000)
   * @param {number} [options.closeTimeout] ms close() waits for the close handshake (2000)
   * @param {number} [options.refreshBefore] ms before `exp` to refresh the token (60000)
   * @param {boolean} [options.heartbeat] ping when the server is silent for its
   *   heartbeat interval, and reconnect without a pong (true)
   * @param {number} [options.heartbeatTimeout] ms to wait for that pong (10000)
   * @param {number} [options.maxMessageSize] bytes of one frame (65536, the server's default)
   * @param {number} [options.maxQueue] messages kept for `messages()`; 0: none (10000)
   * @param {number} [options.laterDelay] minimum ms before reconnecting after a
   *   "later" close code (5000)
   * @param {number} [options.receiptDelay] ms a delivery receipt waits for more
   *   messages to be taken, so one `received` covers them (50)
   * @param {number} [options.receiptBatch] messages taken after which the
   *   receipt goes at once (100)
   * @param {false|{initialDelay?: number, maxDelay?: number, factor?: number,
   *   maxAttempts?: number, maxElapsed?: number}} [options.reconnect] the
   *   backoff (ms) and give-up policy; false: never reconnect
   * @param {string} [options.session] a session to resume (e.g. kept across page loads)
   * @param {number} [options.lastSeq] the highest seq received in that session
   * @throws {TypeError|RangeError} an option has the wrong type or range (the message names it)
   */
  constructor(url, options = {}) {
    super();
    this.url = resolveUrl(url);
    const opts = { ...DEFAULTS };
    for (const [name, value] of Object.entries(options)) {
      if (value !== undefined) opts[name] = value; // undefined: the default
    }
    this._WebSocket = opts.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError(
        "no WebSocket: pass the WebSocket option (e.g. the ws package's WebSocket on Node 20)",
      );
    }
    const token = opts.token;
    if (token !== undefined && typeof token !== "string" && typeof token !== "function") {
      throw new TypeError("token must be a string or a function returning one");
    }
    if (opts.authMode !== "subprotocol" && opts.authMode !== "frame") {
      const mode = JSON.stringify(opts.authMode);
      throw new RangeError(`authMode must be "subprotocol" or "frame", not ${mode}`);
    }
    if (opts.authMode === "frame" && token === undefined) {
      throw new TypeError('authMode "frame" needs a token');
    }
    for (const name of ["requestTimeout", "connectTimeout", "closeTimeout", "heartbeatTimeout"]) {
      positive(name, opts[name]);
    }
    positive("maxMessageSize", opts.maxMessageSize);
    for (const name of ["refreshBefore", "maxQueue", "laterDelay", "receiptDelay"]) {
      nonNegative(name, opts[name]);
    }
    if (!(Number.isSafeInteger(opts.receiptBatch) && opts.receiptBatch >= 1)) {
      throw new RangeError(`receiptBatch must be an integer >= 1, not ${opts.receiptBatch}`);
    }
    this._tokenOption = token;
    this._options = opts;
    if (opts.reconnect === false) {
      this._reconnect = null;
    } else {
      this._reconnect = { ...RECONNECT_DEFAULTS, ...(opts.reconnect ?? {}) };
      nonNegative("reconnect.initialDelay", this._reconnect.initialDelay);
      nonNegative("reconnect.maxDelay", this._reconnect.maxDelay);
      positive("reconnect.factor", this._reconnect.factor);
      positive("reconnect.maxAttempts", this._reconnect.maxAttempts);
      positive("reconnect.maxElapsed", this._reconnect.maxElapsed);
    }
    if (opts.session !== undefined && (typeof opts.session !== "string" || !opts.session)) {
      throw new TypeError("session must be a non-empty string");
    }
    if (opts.lastSeq !== undefined && !(Number.isSafeInteger(opts.lastSeq) && opts.lastSeq >= 0)) {
      throw new RangeError(`lastSeq must be an integer >= 0, not ${opts.lastSeq}`);
    }

    this._state = "idle";
    this._socket = null;
    this._generation = 0; // one per connection attempt: stale callbacks compare it
    this._idPrefix = randomTag();
    this._ids = 0;
    /** Requests awaiting a reply, by id, in the order they were made. */
    this._pending = new Map();
    /** Subscribed patterns (and the extra fields they were made with), joined rooms. */
    this._subscriptions = new Map();
    this._rooms = new Set();
    this._sessionId = opts.session ?? null;
    this._seq = new SeqTracker(opts.lastSeq ?? 0);
    this._welcome = null;
    this._degraded = false;
    this._token = null;
    this._failures = 0; // connection attempts in a row that ended without a welcome
    this._failingSince = null;
    this._authFailures = 0;
    this._handshakeStatus = null;
    this._lastReceived = 0;
    this._timers = {
      connect: null,
      reconnect: null,
      refresh: null,
      heartbeat: null,
      receipt: null,
    };
    // Delivery receipts: the session epoch (one per session: a lost session
    // starts the next), the highest seq taken by the application, the highest
    // sent in a `received` on this connection, whether some subscription asked
    // for receipts (or the server redelivered: it expects them), the first seq
    // this client accepted in the session and the redelivered ones before it
    // that it handed on.
    this._epoch = 0;
    this._taken = 0;
    this._acked = 0;
    this._ackAgain = false;
    this._receipts = false;
    this._receiptsSeen = false;
    this._firstSeq = null;
    this._early = new Set();
    this._heartbeatBusy = false;
    this._connectWaiters = [];
    this._closing = null;
    this._afterClose = null;
    this._queue = new MessageQueue(opts.maxQueue, (dropped) =>
      this.emit("overflow", { dropped: 1, seq: dropped.seq }),
    );
  }

  // -- state, read-only ---------------------------------------------------------

  /** "idle", "connecting", "authenticating", "active", "waiting", "closing" or "closed". */
  get state() {
    return this._state;
  }

  /** True while a welcomed connection is open. */
  get connected() {
    return this._state === "active";
  }

  /** The current (or last) session id, or null. */
  get sessionId() {
    return this._sessionId;
  }

  /** The current connection id, or null. */
  get connectionId() {
    return this._state === "active" ? this._welcome.connection_id : null;
  }

  /** The user id the server knows this client by (from `welcome`), or null. */
  get user() {
    return this._welcome?.user ?? null;
  }

  /** The roles of the current token (from the last `welcome`). */
  get roles() {
    return this._welcome?.roles ?? [];
  }

  /** The highest `seq` received in this session (resume with it). */
  get lastSeq() {
    return this._seq.lastSeq;
  }

  /** True while the server says it runs in degraded mode. */
  get degraded() {
    return this._degraded;
  }

  /** The patterns this client is subscribed to (restored after a lost session). */
  get subscriptions() {
    return [...this._subscriptions.keys()];
  }

  /** The rooms this client is in (joined again after a lost session). */
  get rooms() {
    return [...this._rooms];
  }

  // -- lifecycle ------------------------------------------------------------------

  /**
   * Connect, and keep connected until `close()`.
   *
   * Resolves with the `connected` event's value at the first `welcome`
   * (at once when already connected); rejects with AuthFailed,
   * ConnectionClosed or GaveUp when the client stops first. Calling it on a
   * closed client starts it again, resuming its session.
   * @returns {Promise<object>}
   */
  connect() {
    if (this._state === "active") return Promise.resolve(this._connectedInfo());
    if (this._state === "closing") {
      return Promise.reject(new ConnectionClosed("the client is closing"));
    }
    const promise = new Promise((resolve, reject) => {
      this._connectWaiters.push({ resolve, reject });
    });
    if (this._state === "idle" || this._state === "closed") {
      this._queue.reopen();
      this._failures = 0;
      this._failingSince = null;
      this._authFailures = 0;
      this._fire("connect");
      this._startAttempt();
    }
    return promise;
  }

  /**
   * Close the connection (code 1000) and stop reconnecting. Pending requests
   * reject with ConnectionClosed; `messages()` iterators end once the queued
   * messages are read; `closed` is emitted. The server keeps the session
   * resumable for its TTL.
   * @returns {Promise<void>}
   */
  close() {
    if (this._state === "idle" || this._state === "closed") {
      if (this._state === "idle") this._finish(null, 1000, "closed by the application");
      return Promise.resolve();
    }
    if (this._closing) return this._closing;
    const socket = this._socket;
    this._fire("close");
    this._clearTimers();
    this._rejectAll(new ConnectionClosed("closed by the application", { closeCode: 1000 }));
    this._closing = new Promise((resolve) => {
      if (!socket) {
        this._finish(null, 1000, "closed by the application");
        resolve();
        return;
      }
      const timer = setTimeout(() => {
        if (this._state === "closing") {
          terminate(socket);
          this._finish(null, 1006, "close handshake timed out");
        }
        resolve();
      }, this._options.closeTimeout);
      this._afterClose = () => {
        clearTimeout(timer);
        resolve();
      };
      try {
        socket.close(1000);
      } catch {
        terminate(socket);
      }
    });
    return this._closing;
  }

  /**
   * Skip the wait before the next reconnect attempt (e.g. when the browser
   * says it is online again). True if an attempt starts now.
   * @returns {boolean}
   */
  reconnectNow() {
    if (this._state !== "waiting") return false;
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = null;
    this._fire("retry");
    this._startAttempt();
    return true;
  }

  /**
   * The messages, in `seq` order, each once, across reconnects: an async
   * iterator over the client's queue (`for await (const msg of c.messages())`).
   * Several iterators share (compete for) one queue; use the `message` event
   * to see every message in several places. The iteration ends after
   * `close()`, or throws the error that stopped the client (AuthFailed,
   * GaveUp, ConnectionClosed), once the queued messages are read.
   * @returns {AsyncIterableIterator<Message>}
   */
  messages() {
    const queue = this._queue;
    const waiter = { resolve: null, reject: null };
    let finished = false;
    return {
      next: () => {
        if (finished) return Promise.resolve({ value: undefined, done: true });
        return queue.take(waiter).then(
          (result) => {
            if (result.done) finished = true;
            else this._took(result.value);
            return result;
          },
          (err) => {
            finished = true;
            throw err;
          },
        );
      },
      return: () => {
        finished = true;
        queue.cancel(waiter);
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  // -- requests (docs/protocol.md, "Client frames") ----------------------------------

  /**
   * Subscribe to a topic or pattern. Resolves with `subscribed`. With
   * `receipts: true` the client acknowledges this subscription's messages as
   * the application takes them, and rtcs sends again those it does not hear
   * about (docs/protocol.md, "Delivery receipts"); subscribing again to the
   * same pattern sets `receipts` anew.
   * @param {string} topic
   * @param {{timeout?: number, receipts?: boolean} & Record<string, unknown>} [options]
   *   other fields go into the frame (protocol extensions)
   */
  async subscribe(topic, options = {}) {
    const { timeout, ...extra } = options;
    if (extra.receipts !== undefined && typeof extra.receipts !== "boolean") {
      throw new TypeError(`receipts must be a boolean, not ${typeof extra.receipts}`);
    }
    if (extra.receipts === false) delete extra.receipts;
    return this._request("subscribe", { ...extra, topic: text("topic", topic) }, timeout);
  }

  /** Unsubscribe from a topic or pattern. Resolves with `unsubscribed`. */
  async unsubscribe(topic, { timeout } = {}) {
    return this._request("unsubscribe", { topic: text("topic", topic) }, timeout);
  }

  /**
   * Publish `data` (any JSON value, null included) to `topic`. Resolves with
   * the `ack` once the message was routed (`duplicate: true` when a resend
   * of the same request had already been delivered).
   */
  async publish(topic, data, options = {}) {
    const { timeout, ...extra } = options;
    const fields = { ...extra, topic: text("topic", topic), data: json("data", data) };
    return this._request("publish", fields, timeout);
  }

  /**
   * A direct message to `to`: `{user}` or `{connection}` (a string is a
   * user id). Resolves with `ack`; rejects with Offline when no connection
   * of the target is live.
   */
  async send(to, data, { timeout } = {}) {
    const target = typeof to === "string" ? { user: to } : to;
    return this._request("send", { to: object("to", target), data: json("data", data) }, timeout);
  }

  /** Join a room. Resolves with `joined` (`members`: user ids). */
  async join(room, { timeout } = {}) {
    return this._request("join", { room: text("room", room) }, timeout);
  }

  /** Leave a room. Resolves with `left`. */
  async leave(room, { timeout } = {}) {
    return this._request("leave", { room: text("room", room) }, timeout);
  }

  /**
   * Broadcast `data` to `target`: `{room}`, `{scope: "global"}` or
   * `{filter: {roles, users}}` (a string is a room). Resolves with `ack`.
   */
  async broadcast(target, data, { timeout } = {}) {
    const fields = typeof target === "string" ? { room: target } : object("target", target);
    return this._request("broadcast", { ...fields, data: json("data", data) }, timeout);
  }

  /**
   * Presence of `{room}` or `{user}` (a string is a room). Resolves with
   * `presence_state` (`members`, or `online` and `connections`).
   */
  async presence(target, { timeout } = {}) {
    const fields = typeof target === "string" ? { room: target } : object("target", target);
    return this._request("presence", fields, timeout);
  }

  /** An application-level ping. Resolves with `pong`. */
  async ping({ timeout } = {}) {
    return this._request("ping", {}, timeout);
  }

  /**
   * Any other client frame (a protocol extension): `frame.type` is required,
   * the `id` is added. Resolves with the reply that carries the id. Not
   * retried after a drop.
   * @param {{type: string} & Record<string, unknown>} frame
   */
  async request(frame, { timeout } = {}) {
    const { type, ...fields } = object("frame", frame);
    return this._request(text("frame.type", type), fields, timeout, "never");
  }

  /**
   * Refresh the token now: `token` (or, without it, a new one from the
   * token function) goes to the server in an `auth` frame. Resolves with the
   * `welcome` that answers it; rejects with Forbidden when the server
   * refuses it (the connection keeps its current token).
   * @param {string} [token]
   */
  async refreshToken(token) {
    const fresh = token ?? (await this._fetchToken());
    const reply = await this._request("auth", { token: text("token", fresh) }, undefined, "never");
    this._token = fresh;
    this._welcome = { ...this._welcome, roles: reply.roles ?? this._welcome.roles };
    const exp = decodeJwtPayload(fresh)?.exp ?? null;
    this.emit("refreshed", { exp });
    this._scheduleRefresh();
    return reply;
  }

  // -- internals: requests ---------------------------------------------------------

  /** Send `{type, id, ...fields}`; the promise of its reply (see RETRY for drops). */
  _request(type, fields, timeout = this._options.requestTimeout, retry = RETRY[type] ?? "never") {
    if (this._state === "idle" || this._state === "closed" || this._state === "closing") {
      return Promise.reject(new ConnectionClosed("not connected: call connect() first"));
    }
    positive("timeout", timeout);
    this._ids += 1;
    const id = `${this._idPrefix}-${this._ids}`;
    const wire = JSON.stringify({ type, id, ...fields });
    const size = utf8Length(wire);
    if (size > this._options.maxMessageSize) {
      const limit = this._options.maxMessageSize;
      return Promise.reject(
        new TooLarge(`${type} frame of ${size} bytes exceeds maxMessageSize (${limit})`, { id }),
      );
    }
    return new Promise((resolve, reject) => {
      // sentOn: the socket it went out on (null: not sent yet).
      const entry = { id, type, fields, wire, retry, resolve, reject, sentOn: null, timer: null };
      entry.timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new RequestTimeout(`no reply to ${type} within ${timeout} ms`, { id }));
      }, timeout);
      this._pending.set(id, entry);
      if (this._state === "active") this._transmit(entry);
    });
  }

  _transmit(entry) {
    entry.sentOn = this._socket;
    try {
      this._socket.send(entry.wire);
    } catch {
      // The socket is closing: its close event decides what happens to entry.
    }
  }

  _settle(frame) {
    const entry = frame.id === undefined ? undefined : this._pending.get(frame.id);
    if (!entry) return false;
    this._pending.delete(frame.id);
    clearTimeout(entry.timer);
    if (frame.type === "error") entry.reject(errorFromFrame(frame));
    else entry.resolve(frame);
    return true;
  }

  _rejectAll(error) {
    for (const entry of this._pending.values()) {
      clearTimeout(entry.timer);
      entry.reject(error);
    }
    this._pending.clear();
  }

  // -- internals: the connection ----------------------------------------------------

  _fire(event) {
    const next = TRANSITIONS[this._state][event];
    if (next === undefined) throw new Error(`rtcs: no transition from ${this._state} on ${event}`);
    this._state = next;
  }

  async _fetchToken() {
    const option = this._tokenOption;
    const token = typeof option === "function" ? await option() : option;
    if (typeof token !== "string" || token === "") {
      throw new TypeError("the token function returned no token (a non-empty string is needed)");
    }
    return token;
  }

  _startAttempt() {
    this._attempt().catch((err) => this.emit("error", err)); // a bug: said, not swallowed
  }

  /** One connection attempt (state: connecting). */
  async _attempt() {
    const generation = ++this._generation;
    this._handshakeStatus = null;
    let token = null;
    if (this._tokenOption !== undefined) {
      try {
        token = await this._fetchToken();
      } catch (err) {
        if (generation !== this._generation || this._state !== "connecting") return;
        const message = `the token function failed: ${err?.message ?? err}`;
        this.emit("error", new RtcsError("token", message, { cause: err }));
        if (this._state === "connecting") this._dropped(1006, "no token");
        return;
      }
      if (generation !== this._generation || this._state !== "connecting") return;
    }
    this._token = token;
    const frameAuth = this._options.authMode === "frame";
    const protocols = [SUBPROTOCOL];
    if (token !== null && !frameAuth) protocols.push(BEARER_PREFIX + token);
    let socket;
    try {
      socket = new this._WebSocket(frameAuth ? this.url : this._resumeUrl(), protocols);
    } catch (err) {
      // An invalid URL, or a token with characters a subprotocol cannot hold.
      const message = `cannot open a WebSocket: ${err?.message ?? err}`;
      this._stop(new ConnectionClosed(message, { cause: err }), 1006, "");
      return;
    }
    this._socket = socket;
    socket.onopen = () => this._onOpen(socket);
    socket.onmessage = (event) => this._onText(socket, event.data);
    socket.onerror = (event) => {
      const match = HANDSHAKE_STATUS.exec(String(event?.message ?? event?.error?.message ?? ""));
      if (match && socket === this._socket) this._handshakeStatus = Number(match[1]);
    };
    socket.onclose = (event) => this._onClose(socket, event.code, event.reason ?? "");
    this._timers.connect = setTimeout(
      () => this._abandon(socket, "no welcome within connectTimeout"),
      this._options.connectTimeout,
    );
  }

  _resumeUrl() {
    if (this._sessionId === null) return this.url;
    const url = new URL(this.url);
    url.searchParams.set("session", this._sessionId);
    url.searchParams.set("last_seq", String(this._seq.lastSeq));
    return url.href;
  }

  _onOpen(socket) {
    if (socket !== this._socket) return;
    this._fire("open");
    this._lastReceived = Date.now();
    if (this._options.authMode === "frame") {
      const frame = { type: "auth", id: `${this._idPrefix}-auth`, token: this._token };
      if (this._sessionId !== null) {
        frame.session = this._sessionId;
        frame.last_seq = this._seq.lastSeq;
      }
      socket.send(JSON.stringify(frame));
    }
  }

  _onText(socket, data) {
    if (socket !== this._socket) return;
    this._lastReceived = Date.now();
    let frame;
    try {
      frame = JSON.parse(typeof data === "string" ? data : String(data));
    } catch {
      frame = null;
    }
    if (frame === null || typeof frame !== "object" || typeof frame.type !== "string") {
      const message = "the server sent a frame that is not a JSON object with a type";
      this.emit("error", new RtcsError("bad_frame", message));
      return;
    }
    switch (frame.type) {
      case "welcome":
        if (this._state === "authenticating") this._onWelcome(socket, frame);
        else this._settle(frame);
        break;
      case "message":
        this._onMessage(frame);
        break;
      case "presence":
        this.emit("presence", { room: frame.room, event: frame.event, user: frame.user });
        break;
      case "status":
        this._degraded = frame.degraded === true;
        this.emit("status", { degraded: this._degraded, reason: frame.reason ?? null });
        break;
      case "subscribed":
        this._remember(frame.topic, frame.id);
        this._settle(frame);
        break;
      case "unsubscribed":
        this._subscriptions.delete(frame.topic);
        this._receiptsChanged();
        if (!this._settle(frame) && frame.reason !== undefined) {
          this.emit("unsubscribed", { topic: frame.topic, reason: frame.reason });
        }
        break;
      case "joined":
        if (typeof frame.room === "string") this._rooms.add(frame.room);
        this._settle(frame);
        break;
      case "left":
        this._rooms.delete(frame.room);
        if (!this._settle(frame) && frame.reason !== undefined) {
          this.emit("left", { room: frame.room, reason: frame.reason });
        }
        break;
      case "error":
        if (!this._settle(frame)) this.emit("error", errorFromFrame(frame));
        break;
      default:
        this._settle(frame); // ack, pong, presence_state, and replies of extensions
    }
  }

  _remember(topic, id) {
    if (typeof topic !== "string") return;
    const entry = id === undefined ? undefined : this._pending.get(id);
    if (entry) {
      const { topic: _topic, ...extra } = entry.fields;
      this._subscriptions.set(topic, extra);
    } else if (!this._subscriptions.has(topic)) {
      this._subscriptions.set(topic, {});
    }
    this._receiptsChanged();
  }

  _onMessage(frame) {
    const seq = frame.seq;
    if (typeof seq === "number") {
      if (frame.redelivered === true) this._receiptsSeen = true;
      if (!this._seq.accept(seq)) {
        // Exactly once, in order: a replay may overlap what already arrived,
        // and a redelivery may repeat what this client holds. A redelivery
        // from before anything this client saw of the session is new to it.
        const early =
          frame.redelivered === true &&
          (this._firstSeq === null || seq < this._firstSeq) &&
          !this._early.has(seq);
        if (!early) {
          if (frame.redelivered === true) {
            this._ackAgain = true;
            this._wantReceipt(false);
          }
          return;
        }
        this._early.add(seq);
      } else if (this._firstSeq === null) {
        this._firstSeq = seq;
      }
    }
    const message = new Message(frame);
    EPOCHS.set(message, this._epoch);
    this._queue.push(message);
    this.emit("message", message);
    if (this._options.maxQueue === 0) this._took(message); // handed to the listeners
  }

  // -- internals: delivery receipts (docs/protocol.md, "Delivery receipts") ------

  _receiptsChanged() {
    this._receipts = [...this._subscriptions.values()].some((extra) => extra.receipts === true);
  }

  /** The application took `message`: the next receipt covers it. */
  _took(message) {
    const seq = message?.seq;
    if (typeof seq !== "number" || EPOCHS.get(message) !== this._epoch || seq <= this._taken) {
      return;
    }
    this._taken = seq;
    if (this._receipts || this._receiptsSeen) {
      this._wantReceipt(this._taken - this._acked >= this._options.receiptBatch);
    }
  }

  /** Send a receipt now, or within `receiptDelay` ms (one timer at a time). */
  _wantReceipt(now) {
    if (now) {
      this._sendReceipt();
    } else if (this._timers.receipt === null) {
      this._timers.receipt = setTimeout(() => {
        this._timers.receipt = null;
        this._sendReceipt();
      }, clampDelay(this._options.receiptDelay));
    }
  }

  _sendReceipt() {
    clearTimeout(this._timers.receipt);
    this._timers.receipt = null;
    const seq = this._taken;
    if (seq <= 0 || (seq <= this._acked && !this._ackAgain)) return;
    if (this._state !== "active") return; // the next welcome asks again
    this._ackAgain = false;
    this._acked = seq;
    try {
      this._socket.send(JSON.stringify({ type: "received", seq }));
    } catch {
      // The socket is closing: the next connection sends it.
    }
  }

  _onWelcome(socket, frame) {
    clearTimeout(this._timers.connect);
    this._timers.connect = null;
    const previous = this._sessionId;
    const lost = previous !== null && frame.resumed !== true;
    this._sessionId = typeof frame.session_id === "string" ? frame.session_id : null;
    this._welcome = frame;
    this._degraded = frame.degraded === true;
    this._fire("welcome");
    this._failures = 0;
    this._failingSince = null;
    this._authFailures = 0;
    // Requests sent on an earlier socket (module docstring): again, or lost.
    const again = [];
    // (A Map keeps insertion order: the requests' order.)
    for (const entry of [...this._pending.values()]) {
      if (entry.sentOn !== null && entry.retry === "if-resumed" && lost) {
        this._pending.delete(entry.id);
        clearTimeout(entry.timer);
        const message = `the session was lost with ${entry.type} in flight`;
        entry.reject(new ConnectionLost(message, { id: entry.id, maybeDelivered: true }));
      } else {
        again.push(entry);
      }
    }
    const info = this._connectedInfo();
    if (lost) {
      const sessionLost = new SessionLost({
        previousSession: previous,
        sessionId: this._sessionId,
        lastSeq: this._seq.lastSeq,
        subscriptions: this.subscriptions,
        rooms: this.rooms,
      });
      this._seq.reset(); // the new session's seqs start at 1
      this._epoch += 1;
      this._taken = 0;
      this._receiptsSeen = false;
      this._firstSeq = null;
      this._early.clear();
      this.emit("sessionlost", sessionLost);
      if (this._socket !== socket) return; // a listener closed the client
      this._restore(sessionLost);
    }
    for (const entry of again) {
      if (this._state !== "active" || this._socket !== socket) break;
      if (this._pending.has(entry.id)) this._transmit(entry);
    }
    // A new connection: a receipt sent on the last one may have been lost.
    this._acked = 0;
    if (this._taken > 0 && (this._receipts || this._receiptsSeen)) this._wantReceipt(false);
    this.emit("connected", info);
    for (const waiter of this._connectWaiters.splice(0)) waiter.resolve(info);
    if (this._socket !== socket) return; // a listener closed the client
    this._scheduleRefresh();
    this._startHeartbeat(frame.heartbeat);
  }

  _connectedInfo() {
    const w = this._welcome;
    return {
      connectionId: w.connection_id,
      sessionId: w.session_id,
      user: w.user,
      roles: w.roles ?? [],
      resumed: w.resumed === true,
      replayed: w.replayed ?? 0,
      degraded: w.degraded === true,
      server: w.server ?? null,
      welcome: w,
    };
  }

  /**
   * After a lost session: subscribe and join again what the client had;
   * `restored` tells when every one of them was answered (`failed`: the
   * errors, each also emitted as `error`, with `restoring` naming it).
   */
  _restore(lost) {
    const socket = this._socket;
    const again = (type, fields, forget, what) =>
      this._request(type, fields).then(
        () => null,
        (err) => {
          if (err instanceof ConnectionClosed || err instanceof ConnectionLost) return null;
          forget();
          err.restoring = { [type]: what, previousSession: lost.previousSession };
          this.emit("error", err);
          return err;
        },
      );
    const done = [
      ...[...this._subscriptions.entries()].map(([topic, extra]) =>
        again(
          "subscribe",
          { ...extra, topic },
          () => {
            this._subscriptions.delete(topic);
            this._receiptsChanged();
          },
          topic,
        ),
      ),
      ...[...this._rooms].map((room) =>
        again("join", { room }, () => this._rooms.delete(room), room),
      ),
    ];
    Promise.all(done).then((errors) => {
      if (this._socket !== socket) return;
      const failed = errors.filter((err) => err !== null);
      this.emit("restored", { subscriptions: this.subscriptions, rooms: this.rooms, failed });
    });
  }

  /** A local decision that `socket` is dead: drop it at once, as if it had closed. */
  _abandon(socket, reason) {
    if (socket !== this._socket) return;
    terminate(socket);
    this._onClose(socket, 1006, reason);
  }

  _onClose(socket, code, reason) {
    if (socket !== this._socket) return;
    this._socket = null;
    clearTimeout(this._timers.connect);
    this._timers.connect = null;
    this._stopConnectionTimers();
    if (this._state === "closing") {
      const resolveClose = this._afterClose;
      this._finish(null, code, reason);
      resolveClose?.();
      return;
    }
    // In flight on this socket: "never" requests fail now, the others wait
    // for the next welcome (resent, or rejected when the session is lost).
    for (const entry of [...this._pending.values()]) {
      if (entry.sentOn === socket && entry.retry === "never") {
        this._pending.delete(entry.id);
        clearTimeout(entry.timer);
        entry.reject(
          new ConnectionLost(`the connection dropped with ${entry.type} in flight (code ${code})`, {
            id: entry.id,
            maybeDelivered: true,
          }),
        );
      }
    }
    const status = this._state === "connecting" ? this._handshakeStatus : null;
    this._dropped(code, reason, status);
  }

  /**
   * The connection (or an attempt) ended with `code` (or HTTP `status`
   * before the upgrade): reconnect after a backoff, or stop (CLOSE_CODES).
   */
  _dropped(code, reason, status = null) {
    const established = this._state === "active";
    const action = status !== null ? statusAction(status) : closeAction(code);
    const how =
      (status !== null ? `HTTP ${status}` : `close code ${code}`) + (reason ? `: ${reason}` : "");
    this._failures = established ? 0 : this._failures + 1;
    let stop = null;
    if (action === "auth") {
      this._authFailures += 1;
      // A token function gets one more chance: its next token may be fresh.
      if (typeof this._tokenOption !== "function" || this._authFailures >= 2) {
        stop = new AuthFailed(`authentication failed (${how})`, {
          closeCode: status !== null ? null : code,
          status,
          reason,
        });
      }
    } else if (action === "stop") {
      stop = new ConnectionClosed(`the server closed the connection (${how})`, {
        closeCode: status !== null ? null : code,
        reason,
      });
    } else if (this._reconnect === null) {
      stop = new ConnectionClosed(`the connection closed (${how}) and reconnect is off`, {
        closeCode: code,
        reason,
      });
    }
    if (established) {
      this.emit("disconnected", { code, reason, reconnect: stop === null });
      if (this._state === "closed") return; // a listener closed the client
    }
    if (stop) {
      this._stop(stop, code, reason);
      return;
    }
    const policy = this._reconnect;
    const now = Date.now();
    if (this._failingSince === null) this._failingSince = now;
    const elapsed = now - this._failingSince;
    if (this._failures >= policy.maxAttempts || elapsed >= policy.maxElapsed) {
      const gaveUp = new GaveUp(
        `gave up reconnecting after ${this._failures} failed attempts in ${elapsed} ms (${how})`,
        {
          attempts: this._failures,
          elapsed,
          cause: new ConnectionClosed(`last attempt: ${how}`, { closeCode: code, reason }),
        },
      );
      this._stop(gaveUp, code, reason);
      return;
    }
    const attempt = this._failures + 1;
    let delay = backoffDelay(attempt, policy);
    if (action === "later") {
      const later = this._options.laterDelay;
      delay = Math.min(Math.max(policy.maxDelay, later), later + delay);
    }
    this._fire("drop");
    this.emit("reconnecting", { attempt, delay, code, reason });
    if (this._state !== "waiting") return; // a listener closed the client
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      if (this._state !== "waiting") return;
      this._fire("retry");
      this._startAttempt();
    }, clampDelay(delay));
  }

  /** Stop for good (no reconnect): `error` says why. */
  _stop(error, code, reason) {
    this._fire("stop");
    this._finish(error, code, reason);
  }

  _finish(error, code, reason) {
    this._state = "closed";
    this._clearTimers();
    const socket = this._socket;
    this._socket = null;
    if (socket) terminate(socket);
    const failure = error ?? new ConnectionClosed("closed by the application", { closeCode: code });
    this._rejectAll(failure);
    for (const waiter of this._connectWaiters.splice(0)) waiter.reject(failure);
    this._queue.end(error);
    this._closing = null;
    this._afterClose = null;
    if (error instanceof GaveUp) this.emit("gaveup", error);
    this.emit("closed", { code, reason, error });
  }

  // -- internals: timers ------------------------------------------------------------

  /**
   * Refresh the token `delay` ms from now (default: `refreshBefore` ahead of
   * its exp); only with a token function. A failed refresh is tried again
   * halfway to the exp while more than a second is left; at the exp the
   * server closes with 4001 and the reconnect asks for a fresh token.
   */
  _scheduleRefresh(delay) {
    clearTimeout(this._timers.refresh);
    this._timers.refresh = null;
    if (typeof this._tokenOption !== "function" || this._state !== "active") return;
    delay ??= refreshDelay(this._tokenExp(), Date.now(), this._options.refreshBefore);
    if (delay === null) return;
    const socket = this._socket;
    this._timers.refresh = setTimeout(async () => {
      this._timers.refresh = null;
      if (this._socket !== socket || this._state !== "active") return;
      try {
        await this.refreshToken(); // schedules the next one
      } catch (err) {
        if (err instanceof ConnectionClosed || err instanceof ConnectionLost) return;
        this.emit("error", err);
        if (this._socket !== socket) return;
        const half = refreshDelay(this._tokenExp(), Date.now(), Infinity);
        if (half !== null && half > 1000) this._scheduleRefresh(half);
      }
    }, clampDelay(delay));
  }

  _tokenExp() {
    return decodeJwtPayload(this._token)?.exp ?? null;
  }

  _startHeartbeat(seconds) {
    if (!this._options.heartbeat || typeof seconds !== "number" || !(seconds > 0)) return;
    const interval = seconds * 1000;
    const socket = this._socket;
    this._heartbeatBusy = false;
    this._timers.heartbeat = setInterval(() => {
      if (this._socket !== socket || this._heartbeatBusy) return;
      if (Date.now() - this._lastReceived < interval) return;
      this._heartbeatBusy = true;
      this._request("ping", {}, this._options.heartbeatTimeout, "never").then(
        () => {
          this._heartbeatBusy = false;
        },
        (err) => {
          this._heartbeatBusy = false;
          if (err instanceof RequestTimeout) {
            this._abandon(socket, "no pong within heartbeatTimeout");
          }
        },
      );
    }, clampDelay(interval / 2));
  }

  _stopConnectionTimers() {
    clearTimeout(this._timers.refresh);
    clearInterval(this._timers.heartbeat);
    clearTimeout(this._timers.receipt);
    this._timers.refresh = null;
    this._timers.heartbeat = null;
    this._timers.receipt = null;
  }

  _clearTimers() {
    clearTimeout(this._timers.connect);
    clearTimeout(this._timers.reconnect);
    this._timers.connect = null;
    this._timers.reconnect = null;
    this._stopConnectionTimers();
  }
}

// -- small helpers --------------------------------------------------------------------------

function resolveUrl(url) {
  if (typeof url !== "string" || url === "") throw new TypeError("url must be a non-empty string");
  const base = globalThis.location?.href;
  let parsed;
  try {
    parsed = base ? new URL(url, base) : new URL(url);
  } catch {
    throw new TypeError(`url ${JSON.stringify(url)} is not a ws:// or wss:// URL`);
  }
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  else if (parsed.protocol === "https:") parsed.protocol = "wss:";
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    throw new TypeError(`url ${JSON.stringify(url)} is not a ws:// or wss:// URL`);
  }
  return parsed.href;
}

function positive(name, value) {
  if (typeof value !== "number" || !(value > 0)) {
    throw new RangeError(`${name} must be a positive number, not ${String(value)}`);
  }
}

function nonNegative(name, value) {
  if (typeof value !== "number" || !(value >= 0)) {
    throw new RangeError(`${name} must be a number >= 0, not ${String(value)}`);
  }
}

function text(name, value) {
  if (typeof value !== "string") {
    throw new TypeError(`${name} must be a string, not ${typeof value}`);
  }
  return value;
}

function object(name, value) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new TypeError(`${name} must be an object`);
  }
  return value;
}

function json(name, value) {
  if (value === undefined) throw new TypeError(`${name} is required (null is a valid value)`);
  return value;
}

const ENCODER = new TextEncoder(); // one for every request's size check

function utf8Length(string) {
  return ENCODER.encode(string).length;
}

function clampDelay(ms) {
  return Math.min(Math.max(0, ms), 2147483647); // setTimeout's largest delay
}

function terminate(socket) {
  try {
    if (typeof socket.terminate === "function") socket.terminate();
    else socket.close(4000, "client gave up on this connection");
  } catch {
    // Already closed.
  }
}

function randomTag() {
  const bytes = new Uint8Array(6);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
