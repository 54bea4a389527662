// A socket.io 4 app with the Redis adapter, as a clustered socket.io app is
// deployed: sessions live in each worker's memory (so clients must be sticky),
// broadcasts cross workers through redis-server (tests/real_software.rs).
//
// Listens on $PORT (port mode) or accepts from fd 3 (LISTEN_FDS, fd mode).
// Needs REDIS_PORT (a redis-server on 127.0.0.1). Requires the npm packages of
// tests/support/node (scripts/test installs them with npm ci).
//
// To each client, on connection: `hello` with this worker's CORRAL_WORKER_ID
// and pid. `ping` is acknowledged with the same. `shout` is broadcast to every
// client of every worker (through the adapter). engine.io's connection errors
// ("Session ID unknown" and the like) are printed, so they reach corral's log.
// SIGTERM: io.close() (clients see their transport close and reconnect), exit 0.
const path = require('path');
const modules = path.join(__dirname, 'node', 'node_modules');
const { Server } = require(path.join(modules, 'socket.io'));
const { createAdapter } = require(path.join(modules, '@socket.io/redis-adapter'));
const { createClient } = require(path.join(modules, 'redis'));
const http = require('http');

const id = process.env.CORRAL_WORKER_ID;
const me = { worker: id, pid: process.pid };

async function main() {
  const pub = createClient({ url: `redis://127.0.0.1:${process.env.REDIS_PORT}` });
  const sub = pub.duplicate();
  for (const client of [pub, sub]) client.on('error', (e) => console.log(`redis error: ${e.message}`));
  await Promise.all([pub.connect(), sub.connect()]);

  const server = http.createServer();
  const io = new Server(server, { adapter: createAdapter(pub, sub) });
  io.engine.on('connection_error', (err) => {
    console.log(`engine.io connection_error: ${err.message} (code ${err.code})`);
  });
  io.on('connection', (socket) => {
    socket.emit('hello', me);
    socket.on('ping', (ack) => typeof ack === 'function' && ack(me));
    socket.on('shout', (token) => io.emit('shout', { token, from: me }));
  });

  let closing = false;
  process.on('SIGTERM', () => {
    if (closing) return;
    closing = true;
    io.close(() => {
      Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
    });
    setTimeout(() => process.exit(0), 3000).unref();
  });

  if (+process.env.LISTEN_FDS >= 1) server.listen({ fd: 3 });
  else server.listen(+process.env.PORT, process.env.HOST || '127.0.0.1');
  server.on('listening', () => console.log(`socket.io worker ${id} pid ${process.pid} listening`));
}

main().catch((e) => {
  console.log(`socket.io worker ${id} failed: ${e.stack || e}`);
  process.exit(1);
});
