// Processes a test starts besides Herald (an example's backend and worker, or Herald itself with
// the example's own config): started with their output kept, awaited until a line says they are
// ready, and stopped by PID. Shared by the reference-app tests.
import { spawn } from 'node:child_process';
import { withTimeout } from './harness.mjs';

/** Every process started here and not yet exited. */
export const running = new Set();

/**
 * Starts `cmd args`. `proc.ready` resolves with the first match of `ready` (a RegExp) on an output
 * line (or at once without one) and rejects, with the output, if the process exits first or takes
 * longer than `timeout` ms. `proc.exited` resolves with `{code, signal}`; `proc.lines` keeps the
 * last output lines.
 */
export function startProcess(name, cmd, args, { env = {}, cwd, ready, timeout = 20000 } = {}) {
  const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const proc = { name, child, pid: child.pid, lines: [] };
  running.add(proc);
  proc.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    running.delete(proc);
    resolve({ code, signal });
  }));
  const listeners = new Set();
  for (const stream of [child.stdout, child.stderr]) {
    let buffered = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      buffered += chunk;
      let end;
      while ((end = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 1);
        proc.lines.push(line);
        if (proc.lines.length > 400) proc.lines.shift();
        for (const listener of [...listeners]) listener(line);
      }
    });
  }
  proc.ready = !ready ? Promise.resolve() : withTimeout(new Promise((resolve, reject) => {
    const onLine = (line) => {
      const match = ready.exec(line);
      if (match) { listeners.delete(onLine); resolve(match); }
    };
    listeners.add(onLine);
    proc.exited.then(({ code, signal }) =>
      reject(new Error(`${name} exited (code ${code}, signal ${signal}):\n${proc.lines.join('\n')}`)));
  }), timeout, `${name} to start`);
  proc.ready.catch(() => {});
  return proc;
}

export function alive(proc) {
  return Boolean(proc) && proc.child.exitCode === null && proc.child.signalCode === null;
}

/** Sends `signal`, then SIGKILL after `grace` ms; resolves with how it exited. */
export async function stopProcess(proc, signal = 'SIGTERM', grace = 5000) {
  if (!alive(proc)) return proc?.exited;
  process.kill(proc.pid, signal);
  const done = await Promise.race([proc.exited, new Promise((r) => setTimeout(() => r(null), grace).unref())]);
  if (done) return done;
  if (alive(proc)) process.kill(proc.pid, 'SIGKILL');
  return proc.exited;
}

/** Stops every process still running. */
export async function stopAll(grace = 3000) {
  await Promise.all([...running].map((proc) => stopProcess(proc, 'SIGTERM', grace)));
}
