import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { loadConfig } from '../../src/config.js';
import { startProxy } from '../../src/proxy.js';
import { SchemaError } from '../../src/store/migrate.js';
import { selfSignedCertificate } from '../support/certificates.js';
import { createTestDatabase, testLogger } from '../support/db.js';
import { startFakeHomeserver } from '../support/fake-homeserver.js';
import { startTestProxy } from '../support/proxy.js';

/** A pino logger whose JSON lines are kept for the test to read. */
function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

describe('service', () => {
  it('answers /health and /ready once migrated', async (t) => {
    const proxy = await startTestProxy(t);
    const health = await fetch(`${proxy.url}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok' });
    const ready = await fetch(`${proxy.url}/ready`);
    assert.equal(ready.status, 200);
    assert.equal(((await ready.json()) as { status: string }).status, 'ready');
  });

  it('reports not ready when the database is unreachable', async (t) => {
    const proxy = await startTestProxy(t);
    await proxy.pool.end();
    const ready = await fetch(`${proxy.url}/ready`);
    assert.equal(ready.status, 503);
    assert.equal(((await ready.json()) as { status: string }).status, 'unavailable');
  });

  it('answers unknown routes with M_UNRECOGNIZED and bad bodies with Matrix errors', async (t) => {
    const proxy = await startTestProxy(t);
    const unknown = await fetch(`${proxy.url}/nothing-here?access_token=secret`);
    assert.equal(unknown.status, 404);
    const body = (await unknown.json()) as { errcode: string; error: string };
    assert.equal(body.errcode, 'M_UNRECOGNIZED');
    assert.ok(!body.error.includes('secret'), 'the query string must not be echoed');

    const badJson = await fetch(`${proxy.url}/health`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":' });
    assert.deepEqual([badJson.status, ((await badJson.json()) as { errcode: string }).errcode], [400, 'M_NOT_JSON']);

    const huge = await fetch(`${proxy.url}/health`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ pad: 'x'.repeat(2 * 1024 * 1024) }),
    });
    assert.deepEqual([huge.status, ((await huge.json()) as { errcode: string }).errcode], [413, 'M_TOO_LARGE']);
  });

  it('answers CORS pre-flights for browser clients', async (t) => {
    const proxy = await startTestProxy(t);
    const res = await fetch(`${proxy.url}/_matrix/client/unstable/org.matrix.simplified_msc3575/sync`, { method: 'OPTIONS' });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    assert.match(res.headers.get('access-control-allow-headers') ?? '', /Authorization/);
  });

  it('refuses to start on a database migrated by a newer release', async (t) => {
    const db = await createTestDatabase(t);
    await db.pool.query(`INSERT INTO syncv3_migrations (version, name, checksum) VALUES (999, 'from_the_future', 'x')`);
    const config = loadConfig({
      SYNCV3_SERVER: 'http://127.0.0.1:1',
      SYNCV3_DB: db.url,
      SYNCV3_SECRET: 's',
      SYNCV3_BINDADDR: '127.0.0.1:0',
    });
    await assert.rejects(startProxy(config, testLogger), (err: Error) => err instanceof SchemaError && /version 999/.test(err.message));
  });

  it('connects with a libpq key=value SYNCV3_DB, as the Go proxy accepted', async (t) => {
    const db = await createTestDatabase(t, { dropManually: true });
    const url = new URL(db.url);
    const libpq = [
      `host=${url.hostname}`,
      `port=${url.port || '5432'}`,
      `dbname=${db.name}`,
      url.username ? `user=${decodeURIComponent(url.username)}` : '',
      url.password ? `password='${decodeURIComponent(url.password).replace(/['\\]/g, '\\$&')}'` : '',
      'sslmode=disable',
    ].join(' ');
    const proxy = await startTestProxy(t, { SYNCV3_DB: libpq }, { db });
    t.after(() => db.drop());
    assert.equal((await fetch(`${proxy.url}/ready`)).status, 200);
  });

  it('serves HTTPS with SYNCV3_TLS_CERT and SYNCV3_TLS_KEY', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-tls-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const files = await selfSignedCertificate(dir);
    if (!files) return t.skip('openssl is not installed');
    const proxy = await startTestProxy(t, { SYNCV3_TLS_CERT: files.cert, SYNCV3_TLS_KEY: files.key });
    assert.match(proxy.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const ca = await readFile(files.cert);
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      httpsRequest(`${proxy.url}/health`, { ca }, (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
        .on('error', reject)
        .end();
    });
    assert.deepEqual([status, JSON.parse(body)], [200, { status: 'ok' }]);
    await assert.rejects(fetch(`${proxy.url.replace('https:', 'http:')}/health`), 'no plain HTTP on the TLS port');
  });

  it('drains on shutdown: in-flight requests finish within the grace period, the rest are cut', async (t) => {
    const fake = await startFakeHomeserver();
    t.after(() => fake.close());
    const forever = new Promise<undefined>(() => {});
    fake.route('GET', '/_matrix/client/v3/slow', async () => {
      await new Promise((r) => setTimeout(r, 300));
      return { status: 200, body: { slow: true } };
    });
    fake.route('GET', '/_matrix/client/v3/forever', () => forever);
    const proxy = await startTestProxy(t, { SYNCV3_SERVER: fake.url, SYNCV3_SHUTDOWN_GRACE_SECS: '1' });
    const slow = fetch(`${proxy.url}/_matrix/client/v3/slow`);
    const stuck = fetch(`${proxy.url}/_matrix/client/v3/forever`).then(
      (res) => res.text(),
      (err: Error) => err,
    );
    await new Promise<void>((resolve) => {
      const check = () =>
        fake.requests.filter((r) => r.path.includes('/v3/slow') || r.path.includes('/v3/forever')).length === 2
          ? resolve()
          : setTimeout(check, 10);
      check();
    });
    const started = performance.now();
    await proxy.stop();
    const took = performance.now() - started;
    assert.ok(took >= 900 && took < 4000, `stop took ${Math.round(took)} ms; the grace period is 1 s`);
    const res = await slow;
    assert.deepEqual([res.status, await res.json()], [200, { slow: true }], 'a request that fits in the grace period completes');
    assert.ok((await stuck) instanceof Error, 'a request outliving the grace period is cut');
    await assert.rejects(fetch(`${proxy.url}/health`), 'no longer listening');
  });

  it('gives each request an id (X-Request-Id when the client sends one, else a generated UUID) on its log lines', async (t) => {
    const { logger, lines } = capturingLogger();
    const proxy = await startTestProxy(t, {}, { logger });
    await fetch(`${proxy.url}/health`, { headers: { 'x-request-id': 'client-chosen-id' } });
    await fetch(`${proxy.url}/health`);
    await fetch(`${proxy.url}/health`);
    const ids = lines.filter((l) => l.msg === 'request' && l.path === '/health').map((l) => l.reqId);
    assert.equal(ids.length, 3);
    assert.equal(ids[0], 'client-chosen-id');
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    assert.match(String(ids[1]), uuid);
    assert.match(String(ids[2]), uuid);
    assert.notEqual(ids[1], ids[2]);
  });

  it('listens on a unix socket, replacing a stale one', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-sock-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const socket = path.join(dir, 'proxy.sock');
    const first = await startTestProxy(t, { SYNCV3_BINDADDR: socket });
    assert.equal(first.url, socket);
    await first.stop();
    await writeFile(path.join(dir, 'not-a-socket'), '');
    const second = await startTestProxy(t, { SYNCV3_BINDADDR: socket }, { db: first.db });
    const { request } = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      request({ socketPath: second.url, path: '/health' }, (res) => resolve(res.statusCode ?? 0))
        .on('error', reject)
        .end();
    });
    assert.equal(status, 200);
  });
});
