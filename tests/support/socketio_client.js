// socket.io 4 clients for tests/real_software.rs: each from its own loopback
// address (so a sticky balancer can tell them apart), polling first and then
// upgrading to websocket (socket.io's default).
//
//   node socketio_client.js URL CLIENTS
//
// Each client records the worker (CORRAL_WORKER_ID) that sent it `hello` on
// every (re)connection, and pings with acknowledgements. Once every client is
// connected and upgraded it prints `ready` on a line of its own; the test may
// then restart workers. The run lasts until a line `finish` (or the end) on
// standard input, then waits (at most 20 s more) until every client is
// connected and upgraded again, has one of them `shout`
// (broadcast through the Redis adapter to every worker's clients), and prints
// one JSON line:
//   {"clients":N, "connect_errors":[...], "session_unknown":K,
//    "workers_seen":[[ids of client 0], ...], "reconnections":R,
//    "upgraded":U, "pings_ok":P, "ping_timeouts":T, "shout_received":S}
// Client i connects from 127.0.1.(i+1).
const path = require('path');
const http = require('http');
const { io } = require(path.join(__dirname, 'node', 'node_modules', 'socket.io-client'));

const [url, count] = [process.argv[2], +process.argv[3]];
const report = {
  clients: count, connect_errors: [], session_unknown: 0, workers_seen: [],
  reconnections: 0, upgraded: 0, pings_ok: 0, ping_timeouts: 0, shout_received: 0,
  disconnect_reasons: [],
};
const sockets = [];
const state = [];

function note(error) {
  const text = `${error && error.message}${error && error.description ? ` (${JSON.stringify(String(error.description && error.description.message || error.description))})` : ''}`;
  if (text.includes('Session ID unknown')) report.session_unknown += 1;
  return text;
}

for (let i = 0; i < count; i++) {
  const localAddress = `127.0.1.${i + 1}`;
  const agent = new http.Agent({ keepAlive: true, localAddress });
  const socket = io(url, {
    agent, localAddress, forceNew: true,
    transports: ['polling', 'websocket'], upgrade: true,
    reconnectionDelay: 100, reconnectionDelayMax: 500, timeout: 5000,
  });
  const s = { workers: new Set(), connected: false, upgraded: false, hellos: 0 };
  state.push(s);
  sockets.push(socket);
  socket.on('hello', (who) => { s.workers.add(who.worker); s.hellos += 1; });
  socket.on('connect', () => {
    s.connected = true;
    s.upgraded = false;
    const engine = socket.io.engine;
    if (engine.transport.name === 'websocket') s.upgraded = true;
    engine.once('upgrade', () => { s.upgraded = true; });
  });
  socket.on('disconnect', (reason) => {
    s.connected = false;
    s.upgraded = false;
    report.disconnect_reasons.push(reason);
  });
  socket.on('connect_error', (e) => report.connect_errors.push(`client ${i}: ${note(e)}`));
  socket.io.on('reconnect', () => { report.reconnections += 1; });
  socket.io.on('error', (e) => note(e));
  socket.on('shout', () => { report.shout_received += 1; });
}

const allReady = () => state.every((s) => s.connected && s.upgraded && s.hellos > 0);
let saidReady = false;
let finishAsked = null;
const askFinish = () => { if (finishAsked === null) finishAsked = Date.now(); };
process.stdin.setEncoding('utf8');
process.stdin.on('data', (text) => { if (text.includes('finish')) askFinish(); });
process.stdin.on('end', askFinish);

const pinger = setInterval(() => {
  sockets.forEach((socket, i) => {
    if (!state[i].connected) return;
    socket.timeout(3000).emit('ping', (err) => {
      if (err) report.ping_timeouts += 1; else report.pings_ok += 1;
    });
  });
}, 200);

const watcher = setInterval(() => {
  if (!saidReady && allReady()) {
    saidReady = true;
    console.log('ready');
  }
  if (finishAsked !== null && (allReady() || Date.now() - finishAsked >= 20000)) {
    clearInterval(watcher);
    clearInterval(pinger);
    finish();
  }
}, 50);

function finish() {
  const token = `t${Date.now()}`;
  if (sockets.length > 0 && state[0].connected) sockets[0].emit('shout', token);
  setTimeout(() => {
    report.upgraded = state.filter((s) => s.upgraded).length;
    report.connected = state.filter((s) => s.connected).length;
    report.workers_seen = state.map((s) => [...s.workers].sort());
    console.log(JSON.stringify(report));
    sockets.forEach((socket) => socket.close());
    process.exit(0);
  }, 1000);
}
