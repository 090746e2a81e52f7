// What the JavaScript client tests share: the node's environment (set by
// tests/integration/test_js_client.py), token minting, the control endpoint,
// and waiting on events and conditions with a timeout (never a sleep).

import { createHmac } from "node:crypto";
import { createServer } from "node:net";
import WebSocket from "ws";

import { Client } from "../../rtcs/static/rtcs.js";

export const URL = process.env.JS_RTCS_URL;
export const HTTP = process.env.JS_RTCS_HTTP;
export const SECRET = process.env.JS_RTCS_SECRET;
export const CONTROL = process.env.JS_RTCS_CONTROL;

/** Why the integration tests cannot run here, or false. */
export const SKIP = URL && SECRET && CONTROL
  ? false
  : "needs a node: run by tests/integration/test_js_client.py (JS_RTCS_URL is not set)";

export const TIMEOUT = 5000; // ms: the default wait before a test fails

/**
 * An HS256 token the node accepts (or not, with another `secret`).
 * `ttl` in seconds, or an absolute `exp` (seconds since the epoch).
 */
export function mint(sub, { roles = [], ttl = 3600, exp, secret = SECRET } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const head = part({ alg: "HS256", typ: "JWT" });
  const body = part({ sub, iat: now, exp: exp ?? now + ttl, roles });
  const signature = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${signature}`;
}

/** POST `body` to the control endpoint's `/action` (see test_js_client.Control). */
export async function control(action, body = {}) {
  const response = await fetch(`${CONTROL}/${action}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT),
  });
  const answer = await response.json();
  if (response.status !== 200) {
    throw new Error(`control ${action}: ${response.status} ${JSON.stringify(answer)}`);
  }
  return answer;
}

/**
 * The node's current value of one metric sample (`GET /metrics`), 0 when absent.
 * `labels` as written in the exposition, e.g. `{type: "received"}`.
 */
export async function metric(name, labels = {}) {
  const response = await fetch(`${HTTP}/metrics`, { signal: AbortSignal.timeout(TIMEOUT) });
  const body = await response.text();
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of body.split("\n")) {
    if (line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = match[2] ? match[2].split(",") : [];
    if (have.length === wanted.length && wanted.every((label) => have.includes(label))) {
      return Number(match[3]);
    }
  }
  return 0;
}

/** Resolve once `await probe()` is true, probing every 10 ms (fails after `timeout` ms). */
export async function eventually(probe, { timeout = TIMEOUT, message } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for: ${message ?? probe.toString()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Revoke a session the operator's way: POST /admin/revoke with an admin token. */
export async function revokeSession(session) {
  const response = await fetch(`${HTTP}/admin/revoke`, {
    method: "POST",
    headers: { Authorization: `Bearer ${mint("operator", { roles: ["admin"] })}` },
    body: JSON.stringify({ session }),
    signal: AbortSignal.timeout(TIMEOUT),
  });
  if (response.status !== 200) throw new Error(`revoke: ${response.status} ${await response.text()}`);
}

/** Clients made by `client()`, closed by `closeAll()` after each test. */
const open = new Set();

/**
 * A Client on the node (not connected yet) with Node's `ws`, a long-lived
 * token for `sub` unless `options.token` says otherwise, and fast reconnects.
 */
export function client(sub, options = {}) {
  const c = new Client(options.url ?? URL, {
    WebSocket,
    token: mint(sub, { roles: options.roles ?? [] }),
    ...options,
    reconnect:
      options.reconnect === false
        ? false
        : { initialDelay: 20, maxDelay: 100, ...options.reconnect },
  });
  open.add(c);
  return c;
}

/** A connected client (see `client`). */
export async function connected(sub, options = {}) {
  const c = client(sub, options);
  await c.connect();
  return c;
}

export async function closeAll() {
  const clients = [...open];
  open.clear();
  await Promise.all(clients.map((c) => c.close()));
}

/** Every value of the listed events of `c`, in order: `{type: [values]}`. */
export function record(c, types) {
  const seen = Object.fromEntries(types.map((type) => [type, []]));
  for (const type of types) c.on(type, (value) => seen[type].push(value));
  return seen;
}

/** Reads `c.messages()` into `items` in the background; `until(n)` waits for n of them. */
export class Collector {
  constructor(c) {
    this.items = [];
    this.error = null;
    this.ended = false;
    this._wake = () => {};
    this.done = (async () => {
      try {
        for await (const message of c.messages()) {
          this.items.push(message);
          this._wake();
        }
      } catch (err) {
        this.error = err;
      }
      this.ended = true;
      this._wake();
    })();
  }

  /** Wait until `n` messages arrived (fails after `timeout` ms saying how many did). */
  until(n, timeout = TIMEOUT) {
    return waitUntil(() => this.items.length >= n, {
      timeout,
      message: () => `${this.items.length} of ${n} messages arrived`,
      wake: (fn) => (this._wake = fn),
    });
  }

  get data() {
    return this.items.map((m) => m.data);
  }
}

/**
 * Resolve once `predicate()` is true. Checked whenever `wake` says something
 * changed, and every 5 ms for conditions nothing announces.
 */
export function waitUntil(predicate, { timeout = TIMEOUT, message, wake } = {}) {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!predicate()) return;
      clearInterval(poll);
      clearTimeout(timer);
      resolve();
    };
    const poll = setInterval(check, 5);
    const timer = setTimeout(() => {
      clearInterval(poll);
      const what = typeof message === "function" ? message() : (message ?? predicate.toString());
      reject(new Error(`timed out after ${timeout} ms waiting for: ${what}`));
    }, timeout);
    wake?.(check);
    check();
  });
}

/** A ws:// URL whose port nothing listens on (it was free a moment ago). */
export async function deadUrl() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return `ws://127.0.0.1:${port}/ws`;
}

/** `await rejects(promise)` returns the error (assert.rejects does not). */
export async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}
