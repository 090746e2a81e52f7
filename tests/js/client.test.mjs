// rtcs/static/rtcs.js against a real rtcs node (started by
// tests/integration/test_js_client.py): every request, typed errors, resume,
// lost sessions, reconnect policy, token refresh, degraded mode, delivery
// receipts.
//
// The cases share one node and run one after another (node:test runs the
// tests of a file in order); each uses its own users.

import assert from "node:assert/strict";
import { afterEach, describe, test as nodeTest } from "node:test";

import {
  AuthFailed,
  BadRequest,
  BadTopic,
  ConnectionClosed,
  Forbidden,
  GaveUp,
  Offline,
  RequestTimeout,
  RtcsError,
  SessionLost,
  TooLarge,
  Unavailable,
} from "../../rtcs/static/rtcs.js";
import {
  Collector,
  SKIP,
  TIMEOUT,
  client,
  closeAll,
  connected,
  control,
  deadUrl,
  eventually,
  metric,
  mint,
  record,
  rejection,
  revokeSession,
  waitUntil,
} from "./support.mjs";

const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

// Each case fails after 10 s; the run has its own bound in the Python test.
const test = (name, fn) => nodeTest(name, { timeout: 10000 }, fn);

describe("rtcs.js against a node", { skip: SKIP }, () => {
  afterEach(closeAll);

  test("every request round-trips", async () => {
    const alice = await connected("rt-alice", { roles: ["admin"] });
    const bob = await connected("rt-bob");
    assert.equal(alice.state, "active");
    assert.equal(alice.user, "rt-alice");
    assert.match(alice.connectionId, /^c-/);
    assert.match(alice.sessionId, /^s-/);
    const aliceIn = new Collector(alice);
    const bobIn = new Collector(bob);

    const subscribed = await alice.subscribe("rt.>");
    assert.equal(subscribed.type, "subscribed");
    assert.equal(subscribed.topic, "rt.>");
    assert.deepEqual(alice.subscriptions, ["rt.>"]);
    const ack = await bob.publish("rt.news", { n: 1 });
    assert.equal(ack.type, "ack");
    await aliceIn.until(1);
    const first = aliceIn.items[0];
    assert.deepEqual(
      [first.seq, first.topic, first.room, first.sender, first.data, first.direct],
      [1, "rt.news", null, "rt-bob", { n: 1 }, false],
    );
    assert.equal(typeof first.ts, "number");
    assert.equal((await alice.unsubscribe("rt.>")).type, "unsubscribed");
    assert.deepEqual(alice.subscriptions, []);

    const presenceSeen = alice.waitFor("presence", { filter: (p) => p.user === "rt-bob" });
    assert.deepEqual((await alice.join("rt-room")).members, ["rt-alice"]);
    const joined = await bob.join("rt-room");
    assert.equal(joined.type, "joined");
    assert.deepEqual([...joined.members].sort(), ["rt-alice", "rt-bob"]);
    assert.deepEqual(await presenceSeen, { room: "rt-room", event: "join", user: "rt-bob" });
    assert.deepEqual(bob.rooms, ["rt-room"]);

    assert.equal((await bob.broadcast("rt-room", "to the room")).type, "ack");
    await aliceIn.until(2);
    assert.deepEqual([aliceIn.items[1].room, aliceIn.items[1].sender], ["rt-room", "rt-bob"]);
    await alice.broadcast({ scope: "global" }, "to everyone");
    await alice.broadcast({ filter: { users: ["rt-bob"] } }, "to bob by filter");
    await alice.send("rt-bob", "to bob directly");
    await alice.send({ connection: bob.connectionId }, "to bob's connection");
    await bobIn.until(5); // the room broadcast reached bob too
    assert.deepEqual(bobIn.data, [
      "to the room",
      "to everyone",
      "to bob by filter",
      "to bob directly",
      "to bob's connection",
    ]);
    assert.deepEqual(bobIn.items.map((m) => m.room), ["rt-room", "*", "*", null, null]);
    assert.ok(bobIn.items[3].direct);
    assert.equal(bobIn.items[3].sender, "rt-alice");
    assert.deepEqual(bobIn.items.map((m) => m.seq), [1, 2, 3, 4, 5]);

    const room = await alice.presence({ room: "rt-room" });
    assert.equal(room.type, "presence_state");
    assert.deepEqual([...room.members].sort(), ["rt-alice", "rt-bob"]);
    const user = await alice.presence({ user: "rt-bob" });
    assert.deepEqual([user.online, user.connections], [true, 1]);
    const left = alice.waitFor("presence", { filter: (p) => p.event === "leave" });
    assert.equal((await bob.leave("rt-room")).type, "left");
    assert.deepEqual(await left, { room: "rt-room", event: "leave", user: "rt-bob" });
    assert.deepEqual(bob.rooms, []);
    assert.equal((await alice.ping()).type, "pong");
    assert.equal((await alice.request({ type: "ping" })).type, "pong");

    const closed = alice.waitFor("closed");
    await alice.close();
    assert.deepEqual(await closed, { code: 1000, reason: "", error: null });
    await aliceIn.done;
    assert.equal(aliceIn.error, null); // the iteration ended, cleanly
    assert.equal(alice.state, "closed");
    assert.ok((await rejection(alice.ping())) instanceof ConnectionClosed);
  });

  test("errors are typed by their code", async () => {
    const c = await connected("err-user");
    const cases = [
      [c.publish("err.*", 1), BadTopic, "bad_topic"],
      [c.publish("system.alert", 1), Forbidden, "forbidden"],
      [c.send("err-nobody", 1), Offline, "offline"],
      [c.broadcast("err-room", 1), Forbidden, "forbidden"], // not a member
      [c.join("not a room!"), BadRequest, "bad_request"],
    ];
    for (const [promise, Class, code] of cases) {
      const err = await rejection(promise);
      assert.ok(err instanceof Class, `${err} is a ${Class.name}`);
      assert.ok(err instanceof RtcsError);
      assert.equal(err.code, code);
      assert.equal(typeof err.message, "string");
      assert.match(err.id, /-\d+$/); // the request's id, echoed
    }
    // Too large for the server: refused before sending, the connection stays.
    const big = await rejection(c.publish("err.big", "x".repeat(70000)));
    assert.ok(big instanceof TooLarge);
    // Bad arguments reject too (no throw, no frame).
    assert.ok((await rejection(c.publish("err.t"))) instanceof TypeError);
    assert.ok((await rejection(c.subscribe(42))) instanceof TypeError);
    assert.equal((await c.ping()).type, "pong");

    // No reply in time: RequestTimeout. The late reply still counts: the
    // client knows it is in the room.
    await control("joins", { wait: true });
    try {
      const late = await rejection(c.join("err-slow", { timeout: 200 }));
      assert.ok(late instanceof RequestTimeout);
      assert.equal(late.code, "timeout");
    } finally {
      await control("joins", { wait: false });
    }
    await waitUntil(() => c.rooms.includes("err-slow"));
    assert.equal(c.state, "active");
  });

  test("a drop is resumed: every message once, in order, while another client publishes", async () => {
    // A reconnect that waits (up to an hour) until reconnectNow(): messages
    // are published while the session is detached, and replayed on resume.
    const hour = { initialDelay: 3600000, maxDelay: 3600000 };
    const sub = await connected("resume-sub", { reconnect: hour });
    const pub = await connected("resume-pub");
    const events = record(sub, ["connected", "disconnected", "sessionlost"]);
    await sub.subscribe("resume.t");
    const inbox = new Collector(sub);
    const publish = async (from, to) => {
      for (const i of range(from, to)) await pub.publish("resume.t", i);
    };
    const session = sub.sessionId;

    await publish(0, 10);
    await inbox.until(10);
    const reconnecting = sub.waitFor("reconnecting");
    await control("abort", { connection: sub.connectionId }); // no close frame; the node detached it
    assert.equal((await reconnecting).code, 1006);
    assert.equal(sub.state, "waiting");
    assert.deepEqual(events.disconnected, [{ code: 1006, reason: "", reconnect: true }]);
    const own = sub.publish("resume.mine", "sent while away"); // waits for the connection
    await publish(10, 30); // buffered for the detached session

    const resumed = sub.waitFor("connected");
    assert.equal(sub.reconnectNow(), true);
    await Promise.all([publish(30, 60), resumed, own]); // live messages race the replay
    await inbox.until(60);

    const info = events.connected[0];
    assert.deepEqual([info.resumed, info.sessionId], [true, session]);
    // The 20 published while detached, and any published before the resume took.
    assert.ok(info.replayed >= 20 && info.replayed <= 50, `replayed ${info.replayed}`);
    assert.deepEqual(inbox.data, range(0, 60));
    assert.deepEqual(inbox.items.map((m) => m.seq), range(1, 61));
    assert.equal(sub.lastSeq, 60);
    assert.deepEqual(events.sessionlost, []);
    assert.equal((await sub.ping()).type, "pong");
    assert.equal(inbox.items.length, 60); // nothing more (no duplicate) arrived behind the pong
  });

  test("1001 and 4008 resume; 4003 stops for good", async () => {
    const c = await connected("codes-user");
    const pub = await connected("codes-pub");
    await c.subscribe("codes.t");
    const inbox = new Collector(c);
    const events = record(c, ["reconnecting", "connected"]);
    for (const [code, n] of [[1001, 1], [4008, 2]]) {
      const back = c.waitFor("connected");
      await control("close", { connection: c.connectionId, code, reason: `test ${code}` });
      const info = await back;
      assert.equal(info.resumed, true, `resumed after ${code}`);
      await pub.publish("codes.t", n);
      await inbox.until(n);
    }
    assert.deepEqual(events.reconnecting.map((e) => e.code), [1001, 4008]);
    assert.deepEqual(inbox.data, [1, 2]);

    const closed = c.waitFor("closed");
    await control("close", { connection: c.connectionId, code: 4003, reason: "blocked" });
    const { code, error } = await closed;
    assert.equal(code, 4003);
    assert.ok(error instanceof ConnectionClosed);
    assert.deepEqual([error.closeCode, error.reason], [4003, "blocked"]);
    assert.equal(events.reconnecting.length, 2); // none after 4003
    await inbox.done;
    assert.equal(inbox.error, error); // messages() ends with the reason
    assert.equal(c.state, "closed");
  });

  test("a lost session is said, then subscriptions and rooms come back", async () => {
    let tokens = 0;
    const c = await connected("lost-user", {
      token: () => {
        tokens += 1;
        return mint("lost-user");
      },
    });
    const pub = await connected("lost-pub");
    await c.subscribe("lost.t");
    await c.join("lost-room");
    await pub.join("lost-room");
    const inbox = new Collector(c);
    await pub.publish("lost.t", "before");
    await inbox.until(1);
    const old = c.sessionId;
    const events = record(c, ["disconnected", "connected"]);
    const lost = c.waitFor("sessionlost");
    const restored = c.waitFor("restored");

    // Revoked: closed with 4001, and the session can never be resumed. A
    // token function lets the client try again with a fresh token.
    await revokeSession(old);
    const gone = await lost;
    assert.ok(gone instanceof SessionLost);
    assert.equal(gone.previousSession, old);
    assert.notEqual(gone.sessionId, old);
    assert.equal(gone.lastSeq, 1);
    assert.deepEqual([gone.subscriptions, gone.rooms], [["lost.t"], ["lost-room"]]);
    assert.deepEqual(await restored, { subscriptions: ["lost.t"], rooms: ["lost-room"], failed: [] });
    const drops = events.disconnected.map((e) => [e.code, e.reason, e.reconnect]);
    assert.deepEqual(drops, [[4001, "revoked", true]]);
    assert.equal(events.connected[0].resumed, false);
    assert.equal(tokens, 2);
    assert.equal(c.sessionId, gone.sessionId);

    await pub.publish("lost.t", "after");
    await pub.broadcast("lost-room", "room after");
    await inbox.until(3);
    assert.deepEqual(inbox.data, ["before", "after", "room after"]);
    assert.deepEqual(inbox.items.map((m) => m.seq), [1, 1, 2]); // the new session counts from 1
  });

  test("gives up after maxAttempts failed attempts", async () => {
    const c = client("giveup-user", {
      url: await deadUrl(),
      reconnect: { initialDelay: 5, maxDelay: 20, maxAttempts: 3 },
    });
    const events = record(c, ["reconnecting", "gaveup", "closed"]);
    const err = await rejection(c.connect());
    assert.ok(err instanceof GaveUp);
    assert.equal(err.attempts, 3);
    assert.deepEqual(events.reconnecting.map((e) => e.attempt), [2, 3]);
    assert.deepEqual(events.gaveup, [err]);
    assert.equal(events.closed[0].error, err);
    assert.equal(c.state, "closed");
  });

  test("a bad token is not retried", async () => {
    const wrong = mint("bad-user", { secret: "not the node's secret, long enough for HS256 anyway" });
    // A fixed token: refused at the handshake (HTTP 401), no second attempt.
    const fixed = client("bad-user", { token: wrong });
    const fixedEvents = record(fixed, ["reconnecting"]);
    const err = await rejection(fixed.connect());
    assert.ok(err instanceof AuthFailed, String(err));
    assert.deepEqual([err.code, err.status], ["auth_failed", 401]);
    assert.deepEqual(fixedEvents.reconnecting, []);

    // A token function gets one more chance (its next token may be fresh), no more.
    let calls = 0;
    const fn = client("bad-user", { token: () => (calls += 1, wrong) });
    const fnEvents = record(fn, ["reconnecting"]);
    assert.ok((await rejection(fn.connect())) instanceof AuthFailed);
    assert.equal(calls, 2);
    assert.equal(fnEvents.reconnecting.length, 1);

    // First-frame auth: the server closes with 4001.
    const frame = client("bad-user", { token: wrong, authMode: "frame" });
    const closed = await rejection(frame.connect());
    assert.ok(closed instanceof AuthFailed);
    assert.deepEqual([closed.closeCode, closed.status], [4001, null]);
  });

  test("a short-lived token is refreshed before its exp; a fixed one expires", async () => {
    const exp = Math.floor(Date.now() / 1000) + 2; // 1 to 2 s from now
    const short = mint("refresh-user", { exp });
    let calls = 0;
    const refreshing = await connected("refresh-user", {
      token: () => (calls += 1) === 1 ? short : mint("refresh-user"),
    });
    const fixed = await connected("refresh-fixed", { token: mint("refresh-fixed", { exp }) });
    const events = record(refreshing, ["disconnected", "reconnecting"]);
    const connection = refreshing.connectionId;
    const fixedEvents = record(fixed, ["reconnecting"]);

    const refreshed = await refreshing.waitFor("refreshed", { timeout: TIMEOUT });
    assert.ok(refreshed.exp > exp);
    assert.ok(Date.now() < exp * 1000, "refreshed before the first token's exp");
    // The server enforces exp: the fixed token's connection ends with 4001,
    // and is not retried.
    const { error } = await fixed.waitFor("closed", { timeout: TIMEOUT });
    assert.ok(error instanceof AuthFailed);
    assert.equal(error.closeCode, 4001);
    assert.deepEqual(fixedEvents.reconnecting, []);
    assert.ok(Date.now() >= exp * 1000);
    // ... while the refreshed one lives on, on the same connection.
    assert.equal((await refreshing.ping()).type, "pong");
    assert.equal(refreshing.connectionId, connection);
    assert.deepEqual([events.disconnected, events.reconnecting], [[], []]);
    assert.equal(calls, 2);
  });

  test("degraded mode surfaces as status events", async () => {
    const c = await connected("degraded-user");
    const down = c.waitFor("status", { filter: (s) => s.degraded });
    await control("backend", { down: true });
    try {
      // Two failed backend calls open the breaker (breaker.failure_threshold).
      for (const room of ["degraded-1", "degraded-2"]) {
        assert.ok((await rejection(c.join(room))) instanceof Unavailable);
      }
      assert.deepEqual(await down, { degraded: true, reason: "backend" });
      assert.equal(c.degraded, true);
    } finally {
      await control("backend", { down: false });
    }
    const up = await c.waitFor("status", { filter: (s) => !s.degraded });
    assert.deepEqual(up, { degraded: false, reason: null });
    assert.equal(c.degraded, false);
  });

  test("first-frame auth connects and resumes", async () => {
    const c = await connected("frame-user", { authMode: "frame" });
    const pub = await connected("frame-pub");
    await c.subscribe("frame.t");
    const inbox = new Collector(c);
    await pub.publish("frame.t", 1);
    await inbox.until(1);
    const back = c.waitFor("connected");
    await control("abort", { connection: c.connectionId });
    await pub.publish("frame.t", 2);
    assert.equal((await back).resumed, true);
    await pub.publish("frame.t", 3);
    await inbox.until(3);
    assert.deepEqual(inbox.data, [1, 2, 3]);
    assert.deepEqual(inbox.items.map((m) => m.seq), [1, 2, 3]);
  });

  // Delivery receipts: what the node knows is read from its /metrics, as
  // changes from the start of each case (they run one at a time; sessions of
  // earlier cases keep what they left awaiting a receipt until they expire).
  const pending = () => metric("rtcs_receipts_pending");
  const receiptFrames = () => metric("rtcs_messages_in_total", { type: "received" });

  test("receipts: what messages() hands on is acknowledged, in one frame", async () => {
    const c = await connected("rcpt-user", { receiptDelay: 200 });
    const pub = await connected("rcpt-pub");
    const [sent, base] = [await receiptFrames(), await pending()];
    await c.subscribe("rcpt.>", { receipts: true });
    for (const i of range(0, 5)) await pub.publish("rcpt.t", i);
    await eventually(async () => (await pending()) === base + 5, { message: "5 awaiting" });
    const it = c.messages();
    const got = [];
    for (const _ of range(0, 5)) got.push((await it.next()).value);
    assert.deepEqual(
      got.map((m) => [m.seq, m.data, m.redelivered]),
      range(0, 5).map((i) => [i + 1, i, false]),
    );
    await eventually(async () => (await pending()) === base, { message: "the receipt arrived" });
    assert.equal((await receiptFrames()) - sent, 1);
  });

  test("receipts: a copy redelivered on resume is dropped and acknowledged", async () => {
    // The receipt waits long enough for the drop to come first.
    const c = await connected("rcpt-drop", { receiptDelay: 1000 });
    const pub = await connected("rcpt-drop-pub");
    const seen = record(c, ["message", "connected"]);
    const base = await pending();
    await c.subscribe("rcptdrop.>", { receipts: true });
    await pub.publish("rcptdrop.t", "once");
    const it = c.messages();
    assert.equal((await it.next()).value.seq, 1);
    const back = c.waitFor("connected");
    await control("abort", { connection: c.connectionId });
    assert.equal((await back).resumed, true);
    // The node redelivered 1 (the client held it): acknowledged at the next receipt.
    await eventually(async () => (await pending()) === base, { message: "seq 1 acknowledged" });
    await pub.publish("rcptdrop.t", "twice?");
    const next = (await it.next()).value;
    assert.deepEqual([next.seq, next.data, next.redelivered], [2, "twice?", false]);
    assert.deepEqual(seen.message.map((m) => m.seq), [1, 2]); // never handed on twice
    await eventually(async () => (await pending()) === base, { message: "seq 2 acknowledged" });
  });

  test("receipts: a new page resuming the session gets what awaited a receipt", async () => {
    const first = await connected("rcpt-page", { receiptDelay: 0 });
    const pub = await connected("rcpt-page-pub");
    const base = await pending();
    await first.subscribe("rcptpage.>", { receipts: true });
    await pub.publish("rcptpage.t", "a");
    await pub.publish("rcptpage.t", "b");
    await waitUntil(() => first.lastSeq === 2); // read, never taken: the page goes
    const { sessionId, lastSeq } = first;
    await first.close();
    const page = client("rcpt-page", { session: sessionId, lastSeq, receiptDelay: 0 });
    const info = await page.connect();
    assert.deepEqual([info.resumed, info.replayed], [true, 0]);
    const it = page.messages();
    const got = [(await it.next()).value, (await it.next()).value];
    assert.deepEqual(
      got.map((m) => [m.seq, m.data, m.redelivered]),
      [
        [1, "a", true],
        [2, "b", true],
      ],
    );
    await page.subscribe("rcptpage.>", { receipts: true }); // as the page would again
    await eventually(async () => (await pending()) === base, { message: "the page's receipt" });
  });
});
