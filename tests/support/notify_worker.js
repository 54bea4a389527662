// A Node worker that speaks systemd's notify protocol through the
// `sd-notify` npm package (tests/notify.rs): it listens on $PORT at once,
// says STATUS=warming caches, then READY=1 after READY_DELAY seconds, and
// feeds the watchdog when corral gives it one (WATCHDOG_USEC).
const http = require('http');
const notify = require('sd-notify');

const id = process.env.CORRAL_WORKER_ID;
const server = http.createServer((req, res) => {
  const body = `worker=${id} pid=${process.pid}\n`;
  res.writeHead(200, { 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
  res.end(body);
});

server.listen(+process.env.PORT, process.env.HOST || '127.0.0.1', () => {
  notify.sendStatus('warming caches');
  setTimeout(() => {
    notify.ready();
    notify.sendStatus('serving');
    const usec = +process.env.WATCHDOG_USEC || 0;
    if (usec > 0) notify.startWatchdogMode(Math.floor(usec / 3000));
  }, (+process.env.READY_DELAY || 0) * 1000);
});

process.on('SIGTERM', () => {
  notify.stopWatchdogMode();
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
