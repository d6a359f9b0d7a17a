// Startup as an operator meets it: every failure names the variable to fix, and a database
// that is not up yet (compose starts services together) is waited for, a bounded time.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { inContainer } from '../../src/persistent-data.js';
import { selfSignedCertificate } from '../support/certificates.js';
import { createTestDatabase } from '../support/db.js';
import { freePort } from '../support/ports.js';
import { startTestProxy } from '../support/proxy.js';

const MAIN = path.resolve('src/main.ts');

function startMain(env: Record<string, string>): { child: ChildProcess; out: () => string; exit: Promise<number | null> } {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SYNCV3_')));
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN], { env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const listeners = new Set<() => void>();
  const append = (d: Buffer) => {
    out += d;
    for (const l of listeners) l();
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  return { child, out: () => out, exit: new Promise((resolve) => child.on('exit', (code) => resolve(code))) };
}

/** Resolves when the process has written text matching `pattern`. */
async function printed(proc: { out: () => string }, pattern: RegExp, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(proc.out())) {
    if (Date.now() > deadline) throw new Error(`never printed ${pattern}:\n${proc.out()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A TCP relay from a local port to `target`, standing for a database that comes up late. */
function relay(port: number, target: URL): Promise<net.Server> {
  const server = net.createServer((socket) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    socket.pipe(upstream).pipe(socket);
    socket.on('error', () => upstream.destroy());
    upstream.on('error', () => socket.destroy());
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

describe('startup', () => {
  it('waits for a database that comes up late, then serves', async (t) => {
    const db = await createTestDatabase(t);
    const dbPort = await freePort();
    const late = new URL(db.url);
    const target = new URL(db.url);
    late.port = String(dbPort);
    const port = await freePort();
    const proc = startMain({
      SYNCV3_SERVER: 'http://127.0.0.1:1',
      SYNCV3_DB: late.href,
      SYNCV3_SECRET: 's',
      SYNCV3_BINDADDR: `127.0.0.1:${port}`,
      SYNCV3_DB_STARTUP_TIMEOUT_SECS: '60',
    });
    t.after(() => proc.child.kill('SIGKILL'));
    await printed(proc, /PostgreSQL is not reachable yet; retrying/);
    const server = await relay(dbPort, target);
    t.after(() => new Promise((r) => server.close(r)));
    await printed(proc, /sliding sync proxy listening/);
    assert.equal((await fetch(`http://127.0.0.1:${port}/ready`)).status, 200);
    proc.child.kill('SIGTERM');
    assert.equal(await proc.exit, 0, proc.out());
  });

  it('gives up on an unreachable database with one line naming SYNCV3_DB, no stack trace', async () => {
    const proc = startMain({
      SYNCV3_SERVER: 'http://127.0.0.1:1',
      SYNCV3_DB: `postgres://postgres@127.0.0.1:${await freePort()}/none`,
      SYNCV3_SECRET: 's',
      SYNCV3_BINDADDR: '127.0.0.1:0',
      SYNCV3_DB_STARTUP_TIMEOUT_SECS: '0',
      SYNCV3_LOGLEVEL: 'debug',
    });
    assert.equal(await proc.exit, 1);
    assert.match(proc.out(), /SYNCV3_LOGLEVEL is not a variable this proxy reads, so it is ignored; did you mean SYNCV3_LOG_LEVEL\?/);
    assert.match(proc.out(), /failed to start: SYNCV3_DB: cannot use the PostgreSQL database: connect ECONNREFUSED/);
    assert.doesNotMatch(proc.out(), /\n\s+at /, 'no stack trace');
  });

  it('refuses to start beside another process on the same database, until that one stops', async (t) => {
    const db = await createTestDatabase(t, { dropManually: true });
    t.after(() => db.drop());
    const first = await startTestProxy(t, {}, { db });
    const proc = startMain({
      SYNCV3_SERVER: 'http://127.0.0.1:1',
      SYNCV3_DB: db.url,
      SYNCV3_SECRET: 's',
      SYNCV3_BINDADDR: '127.0.0.1:0',
    });
    t.after(() => proc.child.kill('SIGKILL'));
    assert.equal(await proc.exit, 1, proc.out());
    assert.match(
      proc.out(),
      /failed to start: SYNCV3_DB: another syncv3 process is using this database \(it holds PostgreSQL advisory lock \d+\)/,
    );
    assert.match(proc.out(), /run every process with SYNCV3_CLUSTER=1/);
    assert.doesNotMatch(proc.out(), /\n\s+at /, 'no stack trace');
    // The lock goes with its holder: once the first process stops, another may start.
    await first.stop();
    const next = await startTestProxy(t, {}, { db });
    assert.equal((await fetch(`${next.url}/ready`)).status, 200);
  });

  it('names SYNCV3_BINDADDR when the port is taken or the socket directory is missing', async (t) => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    t.after(() => new Promise((r) => taken.close(r)));
    const { port } = taken.address() as net.AddressInfo;
    await assert.rejects(
      startTestProxy(t, { SYNCV3_BINDADDR: `127.0.0.1:${port}` }),
      new RegExp(`^StartupError: SYNCV3_BINDADDR: 127\\.0\\.0\\.1:${port}: the port is already in use`),
    );
    await assert.rejects(
      startTestProxy(t, { SYNCV3_BINDADDR: '/nonexistent-syncv3-dir/proxy.sock' }),
      /SYNCV3_BINDADDR: \/nonexistent-syncv3-dir\/proxy\.sock: the directory for the socket does not exist/,
    );
    await assert.rejects(
      startTestProxy(t, { SYNCV3_PROM: `127.0.0.1:${port}` }),
      /SYNCV3_PROM: 127\.0\.0\.1:\d+: the port is already in use/,
    );
  });

  it('names SYNCV3_TLS_CERT and SYNCV3_TLS_KEY when they are swapped', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-tls-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const files = await selfSignedCertificate(dir);
    if (!files) return t.skip('openssl is not installed');
    const { cert, key } = files;
    await assert.rejects(
      startTestProxy(t, { SYNCV3_TLS_CERT: key, SYNCV3_TLS_KEY: cert }),
      /SYNCV3_TLS_CERT: ".*key\.pem" and SYNCV3_TLS_KEY ".*cert\.pem" are not a PEM certificate .* are the two swapped\?/,
    );
  });

  it("with SYNCV3_REQUIRE_PERSISTENT_DATA (the image's default), refuses the embedded database on a container's own filesystem", {
    skip: inContainer() ? false : 'not running in a container',
  }, async (t) => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-ephemeral-'));
    t.after(() => rm(dataDir, { recursive: true, force: true }));
    const proc = startMain({
      SYNCV3_SERVER: 'http://127.0.0.1:1',
      SYNCV3_DATA_DIR: dataDir,
      SYNCV3_BINDADDR: '127.0.0.1:0',
      SYNCV3_REQUIRE_PERSISTENT_DATA: '1',
    });
    assert.equal(await proc.exit, 1);
    assert.match(proc.out(), /failed to start: SYNCV3_DATA_DIR: .* is on the container's own filesystem, not on a volume/);
    assert.match(proc.out(), /SYNCV3_REQUIRE_PERSISTENT_DATA=0 runs a throwaway container/);
    assert.doesNotMatch(proc.out(), /initialising embedded PostgreSQL/, 'nothing was created');
  });
});
