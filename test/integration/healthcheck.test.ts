// The image's HEALTHCHECK (src/healthcheck.ts) follows SYNCV3_BINDADDR and TLS, and probes
// /ready, which fails once the database is gone while /health still answers.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { selfSignedCertificate } from '../support/certificates.js';
import { createTestDatabase } from '../support/db.js';
import { freePort } from '../support/ports.js';
import { startTestProxy } from '../support/proxy.js';

const HEALTHCHECK = path.resolve('src/healthcheck.ts');

function healthcheck(env: Record<string, string>): Promise<number> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SYNCV3_')));
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', HEALTHCHECK], { env: { ...clean, ...env } }, (err) =>
      resolve(err ? Number((err as { code?: number }).code ?? 1) : 0),
    );
  });
}

/** A TCP relay to the test database that can be cut, standing for a database that dies. */
async function cuttableDatabase(url: string) {
  const target = new URL(url);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    for (const s of [socket, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    socket.pipe(upstream).pipe(socket);
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  const relayed = new URL(url);
  relayed.port = String(port);
  return {
    url: relayed.href,
    cut: async () => {
      await new Promise((r) => {
        server.close(r);
        for (const s of sockets) s.destroy();
      });
    },
  };
}

describe('the container healthcheck', () => {
  it('probes where SYNCV3_BINDADDR says, over HTTPS when SYNCV3_TLS_CERT is set', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-hc-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const files = await selfSignedCertificate(dir);
    if (!files) return t.skip('openssl is not installed');
    const { cert, key } = files;
    const port = await freePort();
    const tls = { SYNCV3_TLS_CERT: cert, SYNCV3_TLS_KEY: key };
    await startTestProxy(t, { SYNCV3_BINDADDR: `:${port}`, ...tls });
    assert.equal(await healthcheck({ SYNCV3_BINDADDR: `:${port}`, ...tls }), 0, ':port with TLS');
    assert.equal(await healthcheck({ SYNCV3_BINDADDR: `0.0.0.0:${port}`, ...tls }), 0, 'a wildcard host is probed on loopback');
    assert.equal(await healthcheck({ SYNCV3_BINDADDR: `:${port}` }), 1, 'plain HTTP to an HTTPS listener is not healthy');
    assert.equal(await healthcheck({ SYNCV3_BINDADDR: `127.0.0.1:${await freePort()}` }), 1, 'nothing listening');

    const socket = path.join(dir, 'proxy.sock');
    await startTestProxy(t, { SYNCV3_BINDADDR: socket });
    assert.equal(await healthcheck({ SYNCV3_BINDADDR: socket }), 0, 'unix socket');
  });

  it('turns unhealthy when the database is gone, while /health still answers', async (t) => {
    const db = await createTestDatabase(t);
    const relay = await cuttableDatabase(db.url);
    const proxy = await startTestProxy(t, { SYNCV3_DB: relay.url }, { db: { ...db, url: relay.url } });
    const env = { SYNCV3_BINDADDR: `127.0.0.1:${new URL(proxy.url).port}` };
    assert.equal(await healthcheck(env), 0);
    await relay.cut();
    assert.equal((await fetch(`${proxy.url}/ready`)).status, 503);
    assert.equal((await fetch(`${proxy.url}/health`)).status, 200);
    assert.equal(await healthcheck(env), 1);
  });
});
