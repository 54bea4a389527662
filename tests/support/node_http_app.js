// A plain Node.js `http` app behind corral (tests/real_software.rs).
//
// Listens on $PORT (port mode), or accepts from fd 3 when handed a socket
// (LISTEN_FDS, fd mode). `GET /` answers 200 with
// `worker=<CORRAL_WORKER_ID> pid=<pid>` on a kept-alive connection.
//
// SIGTERM is handled the graceful way Node apps do it: server.close() stops
// accepting, closeIdleConnections() closes the kept-alive connections that
// sit between requests, and a connection busy with a request is closed
// right after its answer (Node sets `Connection: close` on it); the process
// exits 0 once every connection is closed.
//
// Environment:
//   EXIT_AFTER_REQUESTS=N  after N answered requests, the app shuts down by
//                          itself the same graceful way (between requests)
//                          and exits 0, as an app with a request budget does.
//   EXIT_ONLY_ID=I         ... only the worker whose CORRAL_WORKER_ID is I.
//   MARK_DIR=DIR           ... only the first process of that slot (it leaves
//                          a marker file there; its replacements serve on).
//   ALLOCATE_ON_SIGUSR2=M  on SIGUSR2, holds M MiB of touched memory (to go
//                          above workers.max_memory when the test says so).
const http = require('http');
const fs = require('fs');
const path = require('path');

const id = process.env.CORRAL_WORKER_ID;
let exitAfter = +process.env.EXIT_AFTER_REQUESTS || 0;
if (exitAfter > 0 && process.env.EXIT_ONLY_ID !== undefined && process.env.EXIT_ONLY_ID !== id) exitAfter = 0;
if (exitAfter > 0 && process.env.MARK_DIR) {
  try {
    fs.writeFileSync(path.join(process.env.MARK_DIR, `exits-${id}`), `${process.pid}\n`, { flag: 'wx' });
  } catch (e) {
    exitAfter = 0; // an earlier process of this slot was the one
  }
}
let served = 0;
let closing = false;

let hoard = null;
const allocate = +process.env.ALLOCATE_ON_SIGUSR2 || 0;
if (allocate > 0) {
  process.on('SIGUSR2', () => {
    hoard = Buffer.alloc(allocate * 1024 * 1024, 1);
    console.log(`worker ${id} pid ${process.pid} holds ${allocate} MiB`);
  });
}

const server = http.createServer((req, res) => {
  served += 1;
  const body = `worker=${id} pid=${process.pid}\n`;
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
  if (exitAfter > 0 && served >= exitAfter && !closing) {
    console.log(`worker ${id} pid ${process.pid} served ${served} requests, closing by itself`);
    // After this answer is written: the connection that carried it is then
    // between requests.
    res.on('finish', () => shutdown());
  }
});
server.keepAliveTimeout = 60000;

function shutdown() {
  if (closing) return;
  closing = true;
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  // Connections that were busy get `Connection: close` on their answer and
  // close after it; anything idle later is closed too.
  setInterval(() => server.closeIdleConnections(), 100).unref();
}

process.on('SIGTERM', shutdown);

if (+process.env.LISTEN_FDS >= 1) server.listen({ fd: 3 });
else server.listen(+process.env.PORT, process.env.HOST || '127.0.0.1');
server.on('listening', () => console.log(`worker ${id} pid ${process.pid} listening`));
