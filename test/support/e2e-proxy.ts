// The built proxy as operators run it, `node dist/main.js` with SYNCV3_* variables, against a
// real homeserver and a fresh test database. Its output is kept, and printed for every test
// that fails. restart() keeps the database, port and secret, as an operator's restart does.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createTestDatabase } from './db.js';
import { freePort } from './ports.js';

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/main.js');
/** Output kept per proxy; older output is dropped first. */
const MAX_OUTPUT = 4 * 1024 * 1024;

export interface E2eProxy {
  /** Base URL of the proxy's client API, e.g. http://127.0.0.1:41234 */
  url: string;
  /** Everything the proxy processes printed so far (all runs). */
  output(): string;
  /** SIGTERM, then wait for exit (SIGKILL after 20 s); the exit code of a clean stop is 0. */
  stop(): Promise<number | null>;
  /** Starts it again after stop(), on the same port, database and secret. */
  start(): Promise<void>;
  /** stop() (which must be clean), then start(). */
  restart(): Promise<void>;
  /** SIGKILL, as a crashed or OOM-killed process: no shutdown, its connections just vanish. */
  kill(): Promise<void>;
}

async function waitHealthy(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`proxy exited during start-up (${child.exitCode ?? child.signalCode})`);
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`proxy did not answer /health within ${timeoutMs} ms`);
}

/**
 * Whether a finished test failed. `TestContext.passed` exists at runtime (Node >= 21) but is
 * missing from @types/node.
 */
export function failed(t: TestContext): boolean {
  return (t as unknown as { passed?: boolean }).passed === false;
}

/**
 * Starts the proxy for a test (usually a file's top-level test, whose subtests share it); it is
 * stopped and its database dropped when that test ends.
 */
export async function startE2eProxy(t: TestContext, homeserverUrl: string, extraEnv: Record<string, string> = {}): Promise<E2eProxy> {
  const [proxy] = await startE2eCluster(t, homeserverUrl, 1, extraEnv);
  return proxy as E2eProxy;
}

/**
 * Starts `count` proxy processes on one database and secret (with `count` > 1, pass
 * SYNCV3_CLUSTER in `extraEnv`), each on a port of its own; all are stopped before the database
 * is dropped.
 */
export async function startE2eCluster(
  t: TestContext,
  homeserverUrl: string,
  count: number,
  extraEnv: Record<string, string> = {},
): Promise<E2eProxy[]> {
  const stops: Array<() => Promise<number | null>> = [];
  // Registered before the database's own cleanup: hooks run in order, and the proxies must be
  // gone before their database is dropped under them.
  t.after(async () => {
    await Promise.all(stops.map((stop) => stop()));
  });
  const db = await createTestDatabase(t);
  const secret = randomBytes(32).toString('hex');
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SYNCV3_')));
  const proxies: E2eProxy[] = [];
  for (let i = 0; i < count; i++) {
    const port = await freePort();
    const env = {
      ...inherited,
      SYNCV3_SERVER: homeserverUrl,
      SYNCV3_DB: db.url,
      SYNCV3_SECRET: secret,
      SYNCV3_BINDADDR: `127.0.0.1:${port}`,
      SYNCV3_SHUTDOWN_GRACE_SECS: '2',
      SYNCV3_LOG_LEVEL: process.env.SYNCV3_E2E_LOG_LEVEL ?? 'info',
      ...extraEnv,
    };
    const proxy = await proxyProcess(t, `http://127.0.0.1:${port}`, env);
    stops.push(proxy.stop);
    proxies.push(proxy);
  }
  return proxies;
}

async function proxyProcess(t: TestContext, url: string, env: Record<string, string | undefined>): Promise<E2eProxy> {
  let child: ChildProcess | undefined;
  let output = '';
  t.after(() => {
    // The test's own body failed (e.g. during setup); failing subtests print their part below.
    if (failed(t)) process.stderr.write(`\n--- proxy ${url} output (last 200 lines):\n${output.split('\n').slice(-200).join('\n')}\n`);
  });

  const append = (chunk: Buffer | string) => {
    output += chunk.toString();
    if (output.length > MAX_OUTPUT) output = output.slice(-MAX_OUTPUT / 2);
  };

  async function start() {
    if (child) throw new Error('the proxy is already running');
    append(`--- starting node dist/main.js on ${url}\n`);
    const proc = spawn(process.execPath, [MAIN], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout?.on('data', append);
    proc.stderr?.on('data', append);
    child = proc;
    try {
      await waitHealthy(url, proc, 30_000);
    } catch (err) {
      await stop();
      throw new Error(`${(err as Error).message}; proxy output:\n${output}`);
    }
  }

  async function stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<number | null> {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return proc?.exitCode ?? null;
    const exited = once(proc, 'exit');
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
    append(`--- proxy exited (${proc.exitCode ?? proc.signalCode})\n`);
    return proc.exitCode;
  }

  // Each failing subtest gets the proxy output written while it ran.
  let mark = 0;
  t.beforeEach(() => {
    mark = output.length;
  });
  t.afterEach((st) => {
    if (!failed(st)) return;
    const lines = output.slice(Math.min(mark, output.length)).split('\n');
    process.stderr.write(`\n--- proxy ${url} output during "${st.name}" (last ${Math.min(lines.length, 200)} lines):\n`);
    process.stderr.write(`${lines.slice(-200).join('\n')}\n`);
  });

  await start();
  return {
    url,
    output: () => output,
    stop: () => stop(),
    start,
    async restart() {
      const code = await stop();
      if (code !== 0) throw new Error(`proxy did not stop cleanly (exit ${code}); output:\n${output.slice(-5000)}`);
      await start();
    },
    async kill() {
      await stop('SIGKILL');
    },
  };
}
