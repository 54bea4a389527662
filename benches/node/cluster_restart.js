// Node's own way to replace workers without downtime, for benches/restarts.py:
// the cluster module's primary runs WORKERS copies of app.js and, on SIGUSR2,
// replaces them one at a time the usual way: fork the new worker, wait for
// its 'listening', then worker.disconnect() the old one (the old worker stops
// accepting, its server closes once its connections end, and it exits).
// Prints `restart finished` once every worker is replaced.
const cluster = require('cluster');

if (!cluster.isPrimary) {
  require('./app.js');
  return;
}

const count = +process.env.WORKERS || 2;
for (let i = 0; i < count; i++) cluster.fork();

let restarting = false;
async function rollingRestart() {
  if (restarting) return;
  restarting = true;
  for (const old of Object.values(cluster.workers)) {
    const fresh = cluster.fork();
    await new Promise((resolve) => fresh.once('listening', resolve));
    const exited = new Promise((resolve) => old.once('exit', resolve));
    old.disconnect();
    // A worker still holding kept-alive connections does not exit on its
    // own: the usual guard is a kill after a grace period.
    const guard = setTimeout(() => old.kill('SIGTERM'), +process.env.GRACE_MS || 2000);
    await exited;
    clearTimeout(guard);
  }
  restarting = false;
  console.log('restart finished');
}

process.on('SIGUSR2', () => rollingRestart());
process.on('SIGTERM', () => {
  for (const w of Object.values(cluster.workers)) w.kill('SIGTERM');
  process.exit(0);
});
