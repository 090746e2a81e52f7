// Node.js `ws` peer for the rtcs benchmark.
//
// Speaks exactly the subset of the rtcs wire protocol the load generator uses
// (welcome, subscribe, publish, join, broadcast), with the same work per frame
// as the raw Python baseline: decode once, encode a fan-out frame once, write
// the same bytes to every recipient, then ack the sender.
//
// Usage: node server.js PORT        (listens on 127.0.0.1 only)
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

const port = parseInt(process.argv[2] || '0', 10);
const host = '127.0.0.1';

const topics = new Map(); // topic -> Set<ws>
const rooms = new Map(); // room -> Set<ws>
let nextId = 0;

function addTo(index, key, ws) {
  let set = index.get(key);
  if (set === undefined) {
    set = new Set();
    index.set(key, set);
  }
  set.add(ws);
}

function removeFrom(index, key, ws) {
  const set = index.get(key);
  if (set === undefined) return;
  set.delete(ws);
  if (set.size === 0) index.delete(key);
}

function fanOut(set, frame) {
  if (set === undefined) return;
  // Encoded once; every recipient gets the same buffer as a text frame.
  const bytes = Buffer.from(JSON.stringify(frame));
  for (const peer of set) {
    if (peer.readyState === 1) peer.send(bytes, { binary: false });
  }
}

const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404);
  res.end();
});
const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false, clientTracking: false });

wss.on('connection', (ws) => {
  nextId += 1;
  const connectionId = 'c-' + nextId;
  const subscriptions = new Set();
  const joined = new Set();
  ws.send(JSON.stringify({
    type: 'welcome', connection_id: connectionId, session_id: 's-' + nextId,
    user: 'bench', roles: [], heartbeat: 25, resumed: false, server: 'node-ws',
  }));

  ws.on('message', (raw) => {
    let f;
    try {
      f = JSON.parse(raw);
    } catch (err) {
      ws.send(JSON.stringify({ type: 'error', code: 'bad_request', message: 'malformed JSON' }));
      return;
    }
    switch (f.type) {
      case 'subscribe':
        subscriptions.add(f.topic);
        addTo(topics, f.topic, ws);
        ws.send(JSON.stringify({ type: 'subscribed', id: f.id, topic: f.topic }));
        break;
      case 'publish':
        fanOut(topics.get(f.topic), { type: 'message', topic: f.topic, data: f.data });
        ws.send(JSON.stringify({ type: 'ack', id: f.id }));
        break;
      case 'join': {
        joined.add(f.room);
        addTo(rooms, f.room, ws);
        ws.send(JSON.stringify({ type: 'joined', id: f.id, room: f.room, members: [] }));
        break;
      }
      case 'broadcast':
        fanOut(rooms.get(f.room), { type: 'message', room: f.room, data: f.data });
        ws.send(JSON.stringify({ type: 'ack', id: f.id }));
        break;
      case 'ping':
        ws.send(JSON.stringify({ type: 'pong', id: f.id }));
        break;
      default:
        ws.send(JSON.stringify({ type: 'error', id: f.id, code: 'bad_request', message: 'unknown type' }));
    }
  });

  ws.on('close', () => {
    for (const t of subscriptions) removeFrom(topics, t, ws);
    for (const r of joined) removeFrom(rooms, r, ws);
  });
  ws.on('error', () => ws.terminate());
});

// Stop when the benchmark runner goes away, even if it was killed.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 1000).unref();

process.on('SIGTERM', () => process.exit(0));

server.listen(port, host, () => {
  process.stdout.write('LISTENING ' + server.address().port + '\n');
});
