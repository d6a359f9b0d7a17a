import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { startProxy } from '../../src/proxy.js';
import { SchemaError } from '../../src/store/migrate.js';
import { createTestDatabase, testLogger } from '../support/db.js';
import { startTestProxy } from '../support/proxy.js';

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
