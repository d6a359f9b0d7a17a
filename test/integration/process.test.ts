// The proxy as operators run it: `node dist/main.js` (here through tsx on src/) with env vars,
// and `npm start` on the build.
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import pg from 'pg';
import { unsupportedNode } from '../../src/node-version.js';
import { freePort } from '../support/ports.js';
import { postgresUsing, waitFor } from '../support/processes.js';

const MAIN = path.resolve('src/main.ts');
const BUILT = path.resolve('dist/main.js');
/** Debian 12's own Node.js (20), older than the proxy needs. */
const OLD_NODE = '/usr/bin/node';

function startMain(env: Record<string, string>): ChildProcess {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SYNCV3_')));
  return spawn(process.execPath, ['--import', 'tsx', MAIN], { env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
}

function collect(child: ChildProcess): { out: () => string; exit: Promise<number | null> } {
  let out = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    out += d;
  });
  return { out: () => out, exit: new Promise((resolve) => child.on('exit', (code) => resolve(code))) };
}

/** PIDs of processes started with `SYNCV3_DATA_DIR=dir` in their environment. */
async function proxiesUsing(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const environ = await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '');
    if (environ.split('\0').includes(`SYNCV3_DATA_DIR=${dir}`)) pids.push(Number(pid));
  }
  return pids;
}

describe('the proxy process', () => {
  it('exits 1 listing every missing or invalid variable, without a stack trace', async () => {
    const child = startMain({
      SYNCV3_DB: 'postgres://x/y',
      SYNCV3_BINDADDR: 'nowhere',
      SYNCV3_TLS_CERT: '/nonexistent/cert.pem',
      SYNCV3_TLS_KEY: '/nonexistent/key.pem',
    });
    const { out, exit } = collect(child);
    assert.equal(await exit, 1);
    const text = out();
    assert.match(text, /Invalid configuration \(5 problems\)/);
    assert.match(text, /SYNCV3_TLS_CERT "\/nonexistent\/cert\.pem" does not exist/);
    assert.match(text, /SYNCV3_TLS_KEY "\/nonexistent\/key\.pem" does not exist/);
    assert.match(text, /SYNCV3_SERVER is required but not set/);
    assert.match(text, /SYNCV3_SECRET is required when SYNCV3_DB is set/);
    assert.match(text, /SYNCV3_BINDADDR "nowhere" is neither host:port/);
    assert.doesNotMatch(text, /\n\s+at /, 'no stack trace');
  });

  it('runs on an embedded PostgreSQL, reuses it on restart, and leaves nothing running after SIGTERM', async (t) => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-data-'));
    t.after(() => rm(dataDir, { recursive: true, force: true }));
    const port = await freePort();
    const env = {
      SYNCV3_SERVER: 'http://127.0.0.1:1',
      SYNCV3_BINDADDR: `127.0.0.1:${port}`,
      SYNCV3_DATA_DIR: dataDir,
    };

    for (const round of ['first start', 'restart']) {
      const child = startMain(env);
      const { out, exit } = collect(child);
      t.after(() => child.kill('SIGKILL'));
      const health = await waitFor(`http://127.0.0.1:${port}/health`, 60_000);
      assert.equal(health.status, 200, round);
      const ready = await fetch(`http://127.0.0.1:${port}/ready`);
      assert.equal(ready.status, 200, round);
      assert.equal((await postgresUsing(dataDir)).length > 0, true, `${round}: embedded postgres runs`);
      if (round === 'first start') {
        // Over its unix socket in the data directory: no TCP port, and a UTF-8 cluster whatever the locale.
        const password = (await readFile(path.join(dataDir, 'postgres.password'), 'utf8')).trim();
        const client = new pg.Client({ host: path.join(dataDir, 'postgres'), user: 'postgres', password, database: 'postgres' });
        await client.connect();
        const setting = async (name: string) => (await client.query(`SELECT current_setting('${name}') AS v`)).rows[0]?.v;
        assert.equal(await setting('listen_addresses'), '', 'no TCP listener');
        assert.equal(await setting('server_encoding'), 'UTF8');
        await client.end();
      }
      const stopAt = Date.now();
      child.kill('SIGTERM');
      assert.equal(await exit, 0, `${round}: clean exit\n${out()}`);
      // Docker sends SIGKILL 10 s after SIGTERM: the whole stop, PostgreSQL included, must fit well inside.
      assert.ok(Date.now() - stopAt < 8000, `${round}: stopped in ${Date.now() - stopAt} ms`);
      assert.deepEqual(await postgresUsing(dataDir), [], `${round}: no postgres left behind`);
      if (round === 'first start') {
        assert.match(out(), /initialising embedded PostgreSQL cluster/);
        assert.match(out(), /generated a new secret/);
      } else {
        assert.doesNotMatch(out(), /initialising|generated a new secret/, 'the cluster and secret are reused');
      }
    }
    assert.equal((await stat(path.join(dataDir, 'secret'))).mode & 0o777, 0o600);
  });

  it('`npm start` passes SIGTERM on to the proxy, which stops its embedded PostgreSQL', {
    skip: existsSync(BUILT) ? false : 'dist/main.js is not built (`npm run build`; CI builds before testing)',
  }, async (t) => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-npm-'));
    t.after(() => rm(dataDir, { recursive: true, force: true }));
    t.after(async () => {
      // Whatever a failed run left behind: an orphaned proxy, and its postgres.
      for (const pid of await proxiesUsing(dataDir)) process.kill(pid, 'SIGKILL');
      for (const pid of await postgresUsing(dataDir)) process.kill(pid, 'SIGQUIT');
    });
    const port = await freePort();
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SYNCV3_')));
    const env = {
      ...clean,
      SYNCV3_SERVER: 'http://127.0.0.1:1',
      SYNCV3_BINDADDR: `127.0.0.1:${port}`,
      SYNCV3_DATA_DIR: dataDir,
    };
    const npm = spawn('npm', ['start', '--silent'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const { out, exit } = collect(npm);
    t.after(() => npm.kill('SIGKILL'));
    assert.equal((await waitFor(`http://127.0.0.1:${port}/health`, 60_000)).status, 200);
    assert.ok((await postgresUsing(dataDir)).length > 0, 'embedded postgres runs');
    npm.kill('SIGTERM');
    await exit;
    // npm exits with its child; the proxy must have stopped rather than been orphaned.
    const deadline = Date.now() + 10_000;
    while ((await postgresUsing(dataDir)).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await postgresUsing(dataDir), [], `no postgres left behind\n${out()}`);
    await assert.rejects(fetch(`http://127.0.0.1:${port}/health`), 'the proxy no longer listens');
    assert.match(out(), /shutting down/);
  });

  it('exits with an error when the database cannot be reached', async () => {
    const port = await freePort();
    const child = startMain({
      SYNCV3_SERVER: 'http://127.0.0.1:1',
      SYNCV3_DB: `postgres://postgres@127.0.0.1:${port}/none`,
      SYNCV3_SECRET: 's',
      SYNCV3_BINDADDR: '127.0.0.1:0',
      SYNCV3_DB_STARTUP_TIMEOUT_SECS: '0',
    });
    const { out, exit } = collect(child);
    assert.equal(await exit, 1);
    assert.match(out(), /failed to start/);
  });

  it('on an older Node.js, exits 1 saying which version is required, before anything runs', {
    skip: existsSync(BUILT) && existsSync(OLD_NODE) ? false : 'needs dist/ built and the system Node 20 at /usr/bin/node',
  }, async () => {
    const version = execFileSync(OLD_NODE, ['--version'], { encoding: 'utf8' }).trim().replace(/^v/, '');
    if (!unsupportedNode(version)) return;
    const child = spawn(OLD_NODE, [BUILT], { env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const { out, exit } = collect(child);
    assert.equal(await exit, 1);
    assert.equal(
      out(),
      `Node.js 22.19.0 or newer is required; this is ${version}. Install Node.js 24 LTS (or run ". scripts/node-env.sh").\n`,
    );
  });

  it('keeps running when its embedded PostgreSQL stops under it: /ready fails, /health answers', async (t) => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-pgstop-'));
    t.after(() => rm(dataDir, { recursive: true, force: true }));
    const port = await freePort();
    const child = startMain({
      SYNCV3_SERVER: 'http://127.0.0.1:1',
      SYNCV3_BINDADDR: `127.0.0.1:${port}`,
      SYNCV3_DATA_DIR: dataDir,
    });
    const { out, exit } = collect(child);
    t.after(() => child.kill('SIGKILL'));
    assert.equal((await waitFor(`http://127.0.0.1:${port}/ready`, 60_000)).status, 200);
    // A fast shutdown, as when a terminal's Ctrl-C reaches the whole process group.
    for (const pid of await postgresUsing(dataDir)) process.kill(pid, 'SIGINT');
    const deadline = Date.now() + 10_000;
    while ((await postgresUsing(dataDir)).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.equal((await fetch(`http://127.0.0.1:${port}/ready`)).status, 503);
    assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200);
    assert.equal(child.exitCode, null, `still running\n${out()}`);
    child.kill('SIGTERM');
    assert.equal(await exit, 0, out());
  });
});
