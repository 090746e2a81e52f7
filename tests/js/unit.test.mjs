// rtcs/static/rtcs.js without a server: the close-code policy, backoff, JWT
// payloads, refresh timing, seq de-duplication, typed errors, option checks,
// and the client against a scripted server for what a real one does not do
// on cue (an overlapping replay, a drop with requests in flight, silence).

import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";

import {
  BadTopic,
  Client,
  CLOSE_CODES,
  ConnectionClosed,
  ConnectionLost,
  ERROR_CLASSES,
  GaveUp,
  Forbidden,
  LimitExceeded,
  Message,
  RtcsError,
  SeqTracker,
  backoffDelay,
  closeAction,
  decodeJwtPayload,
  errorFromFrame,
  refreshDelay,
  statusAction,
} from "../../rtcs/static/rtcs.js";

class NoSocket {
  constructor() {
    throw new Error("no socket in these tests");
  }
}

describe("close codes", () => {
  test("each code of the protocol's table has its action", () => {
    const expected = {
      1000: "stop",
      1001: "resume",
      1003: "stop",
      1007: "stop",
      1009: "stop",
      1011: "resume",
      1013: "later",
      4001: "auth",
      4003: "stop",
      4008: "resume",
      4029: "later",
      4031: "later",
    };
    for (const [code, action] of Object.entries(expected)) {
      assert.equal(closeAction(Number(code)), action, `close code ${code}`);
      assert.equal(CLOSE_CODES[code].action, action);
    }
  });

  test("unknown codes: 4xxx later, others resume", () => {
    assert.equal(closeAction(4999), "later");
    assert.equal(closeAction(4000), "later");
    assert.equal(closeAction(3000), "resume");
    assert.equal(closeAction(1006), "resume");
  });

  test("handshake statuses", () => {
    assert.deepEqual([401, 403, 400, 404, 429, 503, 500].map(statusAction), [
      "auth",
      "stop",
      "stop",
      "stop",
      "later",
      "later",
      "resume",
    ]);
  });
});

describe("backoff", () => {
  const policy = { initialDelay: 100, maxDelay: 1000, factor: 2 };
  test("full jitter below an exponential ceiling, capped", () => {
    const top = () => 0.999999;
    assert.deepEqual([1, 2, 3, 4, 5, 10, 1000].map((n) => backoffDelay(n, policy, top)), [
      99, 199, 399, 799, 999, 999, 999,
    ]);
    assert.equal(backoffDelay(7, policy, () => 0), 0);
    assert.equal(backoffDelay(3, policy, () => 0.5), 200);
  });

  test("random draws stay within [0, ceiling)", () => {
    for (let attempt = 1; attempt < 12; attempt += 1) {
      const delay = backoffDelay(attempt, policy);
      assert.ok(delay >= 0 && delay < Math.min(1000, 100 * 2 ** (attempt - 1)), `${attempt}: ${delay}`);
    }
  });
});

describe("JWT payloads", () => {
  const jwt = (payload) => {
    const text = typeof payload === "string" ? payload : JSON.stringify(payload);
    return `e30.${Buffer.from(text).toString("base64url")}.sig`;
  };

  test("decoded without verification, base64url and UTF-8", () => {
    const payload = { sub: "zoë", exp: 1700000000, roles: ["a?>b"], note: "~~~???" };
    assert.deepEqual(decodeJwtPayload(jwt(payload)), payload);
  });

  test("anything else is null", () => {
    for (const bad of [
      undefined,
      42,
      "",
      "a.b",
      "a.b.c.d",
      "x.!!!.y",
      jwt("not json"),
      jwt("[1, 2]"),
      jwt("null"),
      `x.${Buffer.from([0xff, 0xfe]).toString("base64url")}.y`,
    ]) {
      assert.equal(decodeJwtPayload(bad), null, String(bad));
    }
  });
});

describe("refresh timing", () => {
  const now = 1_000_000_000;
  test("refreshBefore ahead of exp, or halfway when less is left", () => {
    assert.equal(refreshDelay(now / 1000 + 3600, now, 60000), 3540000);
    assert.equal(refreshDelay(now / 1000 + 2, now, 60000), 1000);
    assert.equal(refreshDelay(now / 1000 - 5, now, 60000), 0);
    assert.equal(refreshDelay(undefined, now, 60000), null);
    assert.equal(refreshDelay(Infinity, now, 60000), null);
  });
});

describe("seq tracking", () => {
  test("a replay that overlaps, or a repeat, is dropped; gaps are allowed", () => {
    const seen = new SeqTracker();
    const delivered = [1, 2, 3, 2, 3, 4, 4, 7, 5, 8].filter((seq) => seen.accept(seq));
    assert.deepEqual(delivered, [1, 2, 3, 4, 7, 8]);
    assert.equal(seen.lastSeq, 8);
    seen.reset();
    assert.ok(seen.accept(1));
    assert.ok(!new SeqTracker(10).accept(10));
  });
});

describe("errors", () => {
  test("one class per protocol code", () => {
    const codes = [
      "bad_request",
      "bad_topic",
      "forbidden",
      "offline",
      "rate_limited",
      "too_large",
      "limit",
      "unavailable",
      "internal",
    ];
    assert.deepEqual(Object.keys(ERROR_CLASSES).sort(), [...codes].sort());
    for (const code of codes) {
      const err = errorFromFrame({ type: "error", id: 7, code, message: `m ${code}` });
      assert.ok(err instanceof ERROR_CLASSES[code]);
      assert.ok(err instanceof RtcsError && err instanceof Error);
      assert.deepEqual([err.code, err.message, err.id], [code, `m ${code}`, 7]);
    }
    assert.ok(errorFromFrame({ code: "forbidden" }) instanceof Forbidden);
    assert.ok(errorFromFrame({ code: "bad_topic" }) instanceof BadTopic);
    assert.ok(errorFromFrame({ code: "limit" }) instanceof LimitExceeded);
  });

  test("an unknown code is a plain RtcsError with that code", () => {
    const err = errorFromFrame({ type: "error", code: "brand_new", message: "m" });
    assert.equal(err.constructor, RtcsError);
    assert.equal(err.code, "brand_new");
    assert.equal(errorFromFrame({ code: "toString" }).constructor, RtcsError);
  });
});

describe("messages", () => {
  test("fields by delivery kind", () => {
    const topic = new Message({ type: "message", seq: 3, topic: "a.b", from: "bob", data: null, ts: 5 });
    assert.deepEqual(
      [topic.seq, topic.topic, topic.room, topic.sender, topic.data, topic.ts],
      [3, "a.b", null, "bob", null, 5],
    );
    assert.equal(topic.direct, false);
    const direct = new Message({ type: "message", seq: 4, from: "bob", data: [1] });
    assert.equal(direct.direct, true);
    assert.equal(new Message({ type: "message", seq: 5, room: "*", data: 1 }).room, "*");
  });
});

describe("options", () => {
  test("bad options name themselves", () => {
    const make = (options, url = "ws://h/ws") => () => new Client(url, options);
    assert.throws(make({}), /no WebSocket/);
    assert.throws(make({ WebSocket: NoSocket }, "ftp://h/ws"), /not a ws:\/\/ or wss:\/\/ URL/);
    assert.throws(make({ WebSocket: NoSocket, token: 5 }), /token must be/);
    assert.throws(make({ WebSocket: NoSocket, authMode: "query" }), /authMode/);
    assert.throws(make({ WebSocket: NoSocket, requestTimeout: 0 }), /requestTimeout .* not 0/);
    assert.throws(make({ WebSocket: NoSocket, reconnect: { maxAttempts: -1 } }), /reconnect.maxAttempts/);
    assert.throws(make({ WebSocket: NoSocket, lastSeq: -1 }), /lastSeq/);
    // undefined is the default, not a bad value
    assert.equal(new Client("ws://h/ws", { WebSocket: NoSocket, requestTimeout: undefined }).state, "idle");
  });

  test("http URLs become ws URLs", () => {
    assert.equal(new Client("http://h:1/ws", { WebSocket: NoSocket }).url, "ws://h:1/ws");
    assert.equal(new Client("https://h/ws", { WebSocket: NoSocket }).url, "wss://h/ws");
  });

  test("requests before connect() reject; a constructor that throws stops the client", async () => {
    const c = new Client("ws://127.0.0.1:9/ws", { WebSocket: NoSocket, token: "t" });
    await assert.rejects(c.ping(), ConnectionClosed);
    const closed = c.waitFor("closed");
    const refused = await rejection(c.connect());
    assert.ok(refused instanceof ConnectionClosed && /no socket/.test(refused.message));
    assert.equal((await closed).error.constructor, ConnectionClosed);
    assert.equal(c.state, "closed");
  });
});

/**
 * A scripted stand-in for a server, for what a real one does not do on cue:
 * a replay that overlaps what arrived, a drop with requests in flight.
 * `FakeSocket` has the browser WebSocket's shape; the test plays the server
 * with `frame()` and `drop()`.
 */
function fakeServer() {
  const server = { sockets: [], opened: null };
  server.next = () =>
    new Promise((resolve) => {
      server.opened = resolve;
    });
  server.Socket = class FakeSocket {
    constructor(url, protocols) {
      this.url = new URL(url);
      this.protocols = protocols;
      this.sent = [];
      server.sockets.push(this);
      queueMicrotask(() => {
        this.onopen?.();
        server.opened?.(this);
      });
    }

    send(text) {
      this.sent.push(JSON.parse(text));
    }

    close(code = 1000) {
      queueMicrotask(() => this.onclose?.({ code, reason: "" }));
    }

    terminate() {
      this.close(1006);
    }

    frame(frame) {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }

    welcome(fields = {}) {
      this.frame({
        type: "welcome",
        connection_id: `c-${server.sockets.length}`,
        session_id: "s-1",
        user: "u",
        roles: [],
        heartbeat: 25,
        resumed: false,
        ...fields,
      });
    }

    message(seq, data = seq) {
      this.frame({ type: "message", seq, topic: "t", data, ts: 0 });
    }

    drop(code = 1006) {
      this.onclose?.({ code, reason: "" });
    }
  };
  return server;
}

/** Clients of `fakeClient()`: closed after each test, passed or failed
 * (a client left reconnecting would keep the test process alive). */
const fakes = new Set();

async function fakeClient(options = {}, welcome = {}) {
  const server = fakeServer();
  const c = new Client("ws://fake/ws", {
    WebSocket: server.Socket,
    token: "t",
    reconnect: { initialDelay: 1, maxDelay: 1 },
    ...options,
  });
  fakes.add(c);
  const first = server.next();
  const connecting = c.connect();
  (await first).welcome(welcome);
  await connecting;
  return { c, server, socket: server.sockets[0] };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("the client against a scripted server", () => {
  afterEach(async () => {
    const clients = [...fakes];
    fakes.clear();
    await Promise.all(clients.map((c) => c.close()));
  });

  test("the token goes in the subprotocol; a resume in the URL", async () => {
    const { c, server, socket } = await fakeClient();
    assert.deepEqual(socket.protocols, ["rtcs.v1", "rtcs.bearer.t"]);
    assert.equal(socket.url.search, "");
    socket.message(1);
    socket.message(2);
    const next = server.next();
    socket.drop();
    const again = await next;
    assert.equal(again.url.searchParams.get("session"), "s-1");
    assert.equal(again.url.searchParams.get("last_seq"), "2");
    await c.close();
  });

  test("a replay that overlaps what arrived is delivered once, in order", async () => {
    const { c, server, socket } = await fakeClient();
    const got = [];
    c.on("message", (m) => got.push(m.seq));
    for (const seq of [1, 2, 3]) socket.message(seq);
    const next = server.next();
    socket.drop();
    const again = await next;
    again.welcome({ resumed: true, replayed: 3 });
    for (const seq of [2, 3, 4, 5, 5]) again.message(seq);
    assert.deepEqual(got, [1, 2, 3, 4, 5]);
    const it = c.messages();
    const queued = [];
    for (let i = 0; i < 5; i += 1) queued.push((await it.next()).value.seq);
    assert.deepEqual(queued, [1, 2, 3, 4, 5]);
    await c.close();
    assert.deepEqual(await it.next(), { value: undefined, done: true });
  });

  test("in flight at a drop, session resumed: publish resent with its id, send lost", async () => {
    const { c, server, socket } = await fakeClient();
    const publish = c.publish("t", 1);
    const send = c.send("bob", 2);
    const subscribe = c.subscribe("t.>");
    const [p, s, sub] = socket.sent;
    assert.deepEqual([p.type, s.type, sub.type], ["publish", "send", "subscribe"]);
    const next = server.next();
    socket.drop();
    const lost = await rejection(send);
    assert.ok(lost instanceof ConnectionLost && lost.maybeDelivered);
    const again = await next;
    again.welcome({ resumed: true, replayed: 0 });
    assert.deepEqual(again.sent.map((f) => [f.type, f.id]), [["publish", p.id], ["subscribe", sub.id]]);
    again.frame({ type: "ack", id: p.id, duplicate: true });
    again.frame({ type: "subscribed", id: sub.id, topic: "t.>" });
    assert.deepEqual(await publish, { type: "ack", id: p.id, duplicate: true });
    assert.equal((await subscribe).type, "subscribed");
    assert.deepEqual(c.subscriptions, ["t.>"]);
    await c.close();
  });

  test("in flight at a drop, session lost: publish rejected, subscriptions restored", async () => {
    const { c, server, socket } = await fakeClient();
    const subscribe = c.subscribe("old.>");
    socket.frame({ type: "subscribed", id: socket.sent[0].id, topic: "old.>" });
    await subscribe;
    const publish = c.publish("t", 1);
    socket.message(1);
    const events = [];
    c.on("sessionlost", (e) => events.push(e));
    const next = server.next();
    socket.drop(1011);
    const again = await next;
    again.welcome({ session_id: "s-2", resumed: false });
    const err = await rejection(publish);
    assert.ok(err instanceof ConnectionLost && err.maybeDelivered);
    assert.equal(events.length, 1);
    const [lost] = events;
    assert.deepEqual([lost.previousSession, lost.sessionId, lost.lastSeq], ["s-1", "s-2", 1]);
    assert.deepEqual(again.sent.map((f) => [f.type, f.topic]), [["subscribe", "old.>"]]);
    const restored = c.waitFor("restored");
    again.frame({ type: "subscribed", id: again.sent[0].id, topic: "old.>" });
    assert.deepEqual(await restored, { subscriptions: ["old.>"], rooms: [], failed: [] });
    again.message(1, "new session");
    assert.equal(c.lastSeq, 1);
    await c.close();
  });

  test("requests made while away wait for the connection", async () => {
    const hour = { initialDelay: 3600000, maxDelay: 3600000 };
    const { c, server, socket } = await fakeClient({ reconnect: hour });
    socket.drop();
    assert.equal(c.state, "waiting");
    const ping = c.ping();
    await tick();
    const next = server.next();
    assert.equal(c.reconnectNow(), true);
    const again = await next;
    again.welcome({ resumed: true, replayed: 0 });
    assert.deepEqual(again.sent.map((f) => f.type), ["ping"]);
    again.frame({ type: "pong", id: again.sent[0].id });
    assert.equal((await ping).type, "pong");
    await c.close();
  });

  test("gives up after maxElapsed ms of failed attempts", async () => {
    class Refused {
      constructor() {
        queueMicrotask(() => this.onclose?.({ code: 1006, reason: "" }));
      }
    }
    const c = new Client("ws://fake/ws", {
      WebSocket: Refused,
      reconnect: { initialDelay: 1, maxDelay: 5, maxElapsed: 30 },
    });
    fakes.add(c);
    const started = Date.now();
    const err = await rejection(c.connect());
    assert.ok(err instanceof GaveUp, String(err));
    assert.ok(err.elapsed >= 30 && Date.now() - started >= 30);
    assert.ok(err.attempts > 1);
    assert.equal(err.cause.closeCode, 1006);
  });

  test("a reconnect-later code waits at least laterDelay; a resume code does not", async () => {
    for (const [code, least, most] of [[4029, 40, 41], [4031, 40, 41], [4008, 0, 1], [1001, 0, 1]]) {
      const { c, socket } = await fakeClient({ laterDelay: 40 }); // backoff: under 1 ms
      const reconnecting = c.waitFor("reconnecting");
      socket.drop(code);
      const { delay } = await reconnecting;
      assert.ok(delay >= least && delay < most, `${code}: delay ${delay}`);
    }
  });

  test("close() ends with the close handshake, not its timeout", { timeout: 2000 }, async () => {
    const { c, socket } = await fakeClient({ closeTimeout: 60000 });
    const seen = record(c, ["closed"]);
    const pending = c.ping();
    await c.close();
    assert.deepEqual(seen.closed, [{ code: 1000, reason: "", error: null }]);
    assert.ok((await rejection(pending)) instanceof ConnectionClosed);
    assert.equal(c.state, "closed");
    assert.deepEqual(socket.sent.map((f) => f.type), ["ping"]);
  });

  test("a silent server is pinged, and left without a pong", async () => {
    const { c, socket } = await fakeClient({ heartbeatTimeout: 50 }, { heartbeat: 0.05 });
    const dropped = c.waitFor("disconnected");
    const reconnecting = c.waitFor("reconnecting");
    // 50 ms of silence: a ping; 50 ms more without a pong: the socket is left.
    const reason = "no pong within heartbeatTimeout";
    assert.deepEqual(await dropped, { code: 1006, reason, reconnect: true });
    assert.equal((await reconnecting).attempt, 1);
    assert.deepEqual(socket.sent.map((f) => f.type), ["ping"]);
    await c.close();
  });

  test("a server that answers is not left", async () => {
    const { c, socket } = await fakeClient({ heartbeatTimeout: 50 }, { heartbeat: 0.05 });
    const pinged = () => socket.sent.filter((f) => f.type === "ping");
    for (let n = 1; n <= 3; n += 1) {
      await waitFor(() => pinged().length === n);
      socket.frame({ type: "pong", id: pinged()[n - 1].id });
    }
    assert.equal(c.state, "active");
    await c.close();
  });

  test("server-dropped subscriptions and rooms, status and presence are events", async () => {
    const { c, socket } = await fakeClient();
    const seen = record(c, ["unsubscribed", "left", "status", "presence", "error"]);
    socket.frame({ type: "subscribed", topic: "vip.>" });
    socket.frame({ type: "joined", room: "vip", members: [] });
    socket.frame({ type: "unsubscribed", topic: "vip.>", reason: "forbidden" });
    socket.frame({ type: "left", room: "vip", reason: "forbidden" });
    socket.frame({ type: "status", degraded: true, reason: "backend" });
    socket.frame({ type: "presence", room: "r", event: "join", user: "bob" });
    socket.frame({ type: "error", code: "rate_limited", message: "slow down" });
    assert.deepEqual(seen.unsubscribed, [{ topic: "vip.>", reason: "forbidden" }]);
    assert.deepEqual(seen.left, [{ room: "vip", reason: "forbidden" }]);
    assert.deepEqual([c.subscriptions, c.rooms], [[], []]);
    assert.deepEqual(seen.status, [{ degraded: true, reason: "backend" }]);
    assert.equal(c.degraded, true);
    assert.deepEqual(seen.presence, [{ room: "r", event: "join", user: "bob" }]);
    assert.equal(seen.error[0].code, "rate_limited");
    await c.close();
  });
});

describe("delivery receipts against a scripted server", () => {
  afterEach(async () => {
    const clients = [...fakes];
    fakes.clear();
    await Promise.all(clients.map((c) => c.close()));
  });

  /** Subscribe `c` (on `socket`) and answer it. */
  async function subscribe(c, socket, topic, options) {
    const pending = c.subscribe(topic, options);
    const frame = socket.sent.filter((f) => f.type === "subscribe").at(-1);
    socket.frame({ type: "subscribed", id: frame.id, topic });
    await pending;
    return frame;
  }

  const receipts = (socket) => socket.sent.filter((f) => f.type === "received");

  test("what the application took is acknowledged, once per delay; what it only read is not", async () => {
    const { c, socket } = await fakeClient({ receiptDelay: 20 });
    assert.equal((await subscribe(c, socket, "t.>", { receipts: true })).receipts, true);
    for (const seq of [1, 2, 3]) socket.message(seq);
    const it = c.messages();
    assert.equal((await it.next()).value.seq, 1);
    assert.equal((await it.next()).value.seq, 2);
    assert.deepEqual(receipts(socket), []); // coalesced: the delay has not passed
    await waitFor(() => receipts(socket).length === 1);
    assert.deepEqual(receipts(socket), [{ type: "received", seq: 2 }]); // 3 was not taken
    assert.equal((await it.next()).value.seq, 3);
    await waitFor(() => receipts(socket).length === 2);
    assert.deepEqual(receipts(socket)[1], { type: "received", seq: 3 });
    await c.close();
  });

  test("a batch of taken messages is acknowledged at once", async () => {
    const { c, socket } = await fakeClient({ receiptDelay: 60000, receiptBatch: 2 });
    await subscribe(c, socket, "t.>", { receipts: true });
    for (const seq of [1, 2]) socket.message(seq);
    const it = c.messages();
    await it.next();
    assert.deepEqual(receipts(socket), []);
    await it.next();
    assert.deepEqual(receipts(socket), [{ type: "received", seq: 2 }]);
    await c.close();
  });

  test("without a receipts subscription nothing is acknowledged", async () => {
    const { c, socket } = await fakeClient({ receiptDelay: 0 });
    assert.equal((await subscribe(c, socket, "plain.>")).receipts, undefined);
    await assert.rejects(c.subscribe("x", { receipts: "yes" }), TypeError);
    socket.message(1);
    const it = c.messages();
    await it.next();
    await subscribe(c, socket, "t.>", { receipts: true });
    socket.message(2);
    await it.next();
    await waitFor(() => receipts(socket).length === 1);
    // The first receipt covers 2: none was sent for 1 before receipts were asked for.
    assert.deepEqual(receipts(socket), [{ type: "received", seq: 2 }]);
    await subscribe(c, socket, "t.>", { receipts: false }); // off again
    assert.equal(socket.sent.at(-1).receipts, undefined);
    await c.close();
  });

  test("a redelivered copy is dropped and acknowledged again", async () => {
    const { c, socket } = await fakeClient({ receiptDelay: 0 });
    await subscribe(c, socket, "t.>", { receipts: true });
    const seen = [];
    c.on("message", (m) => seen.push([m.seq, m.redelivered]));
    socket.message(1);
    await c.messages().next();
    await waitFor(() => receipts(socket).length === 1);
    socket.frame({ type: "message", seq: 1, redelivered: true, topic: "t", data: 1, ts: 0 });
    await waitFor(() => receipts(socket).length === 2);
    assert.deepEqual(receipts(socket)[1], { type: "received", seq: 1 });
    assert.deepEqual(seen, [[1, false]]); // handed on once
    await c.close();
  });

  test("a new page resuming a session gets what awaited a receipt, marked, once", async () => {
    const { c, socket } = await fakeClient(
      { session: "s-1", lastSeq: 5, receiptDelay: 0 },
      { resumed: true, replayed: 1 },
    );
    const again = (seq) =>
      socket.frame({ type: "message", seq, redelivered: true, topic: "t", data: seq, ts: 0 });
    again(4);
    again(5);
    socket.message(6);
    again(4); // a second round before the receipt arrived: a copy
    const it = c.messages();
    const got = [];
    for (let i = 0; i < 3; i += 1) {
      const m = (await it.next()).value;
      got.push([m.seq, m.redelivered]);
    }
    assert.deepEqual(got, [[4, true], [5, true], [6, false]]);
    // The server redelivered: it expects receipts even though this page has
    // not subscribed with them yet.
    await waitFor(() => receipts(socket).some((f) => f.seq === 6));
    assert.equal(c.lastSeq, 6);
    await c.close();
  });

  test("after a lost session, what the old one left is never acknowledged to the new one", async () => {
    const { c, server, socket } = await fakeClient({ receiptDelay: 0 });
    await subscribe(c, socket, "t.>", { receipts: true });
    for (const seq of [1, 2, 3]) socket.message(seq); // read, not taken
    const next = server.next();
    socket.drop();
    const fresh = await next;
    fresh.welcome({ session_id: "s-2", resumed: false });
    const restore = fresh.sent.find((f) => f.type === "subscribe");
    assert.deepEqual([restore.topic, restore.receipts], ["t.>", true]);
    fresh.frame({ type: "subscribed", id: restore.id, topic: "t.>" });
    fresh.message(1);
    const it = c.messages();
    const seqs = [];
    for (let i = 0; i < 4; i += 1) seqs.push((await it.next()).value.seq);
    assert.deepEqual(seqs, [1, 2, 3, 1]);
    await waitFor(() => receipts(fresh).length === 1);
    assert.deepEqual(receipts(fresh), [{ type: "received", seq: 1 }]);
    assert.deepEqual(receipts(socket), []);
    await c.close();
  });
});

function record(c, types) {
  const seen = Object.fromEntries(types.map((type) => [type, []]));
  for (const type of types) c.on(type, (value) => seen[type].push(value));
  return seen;
}

async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}

/** Resolve once `predicate()` holds, checking every 2 ms (fails after 2 s). */
function waitFor(predicate, timeout = 2000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      if (predicate()) {
        clearInterval(poll);
        resolve();
      } else if (Date.now() - started > timeout) {
        clearInterval(poll);
        reject(new Error(`timed out waiting for ${predicate}`));
      }
    }, 2);
  });
}
