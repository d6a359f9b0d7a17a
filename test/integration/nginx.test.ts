// docs/nginx.conf, the README's same-hostname deployment, run for real: nginx in front of the
// proxy and a stand-in homeserver, checking that /versions and the sliding sync endpoints
// reach the proxy and everything else reaches the homeserver directly.
//
// Needs the nginx binary (Debian: `apt-get install nginx-light`); without it the file is
// skipped, unless SYNCV3_E2E_REQUIRED=1, which fails it instead. nginx runs from a temporary
// prefix on a free loopback port, so a system nginx (port 80) is neither used nor disturbed.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../support/ports.js';
import { startTestProxy } from '../support/proxy.js';

const CONFIG = new URL('../../docs/nginx.conf', import.meta.url);
const FLAG = 'org.matrix.simplified_msc3575';

function findNginx(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/usr/local/nginx/sbin'];
  return dirs
    .filter((dir) => path.isAbsolute(dir))
    .map((dir) => path.join(dir, 'nginx'))
    .find((candidate) => existsSync(candidate));
}

const nginxBin = findNginx();
const required = process.env.SYNCV3_E2E_REQUIRED === '1';
const skip = nginxBin || required ? false : 'nginx is not installed (Debian: apt-get install nginx-light)';
if (skip) console.warn(`# skipping the nginx tests: ${skip}`);

interface Seen {
  /** Which of the homeserver's two listeners got it: nginx's (`direct`) or the proxy's. */
  via: 'direct' | 'proxy';
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

/**
 * One homeserver stand-in listening twice: nginx's upstream and the proxy's SYNCV3_SERVER are
 * different ports, so every request it records says who passed it on.
 */
async function startHomeserver(t: TestContext) {
  const seen: Seen[] = [];
  const listen = async (via: Seen['via']) => {
    const server = createServer(async (req, res) => {
      for await (const _chunk of req);
      seen.push({ via, method: req.method ?? '', url: req.url ?? '', headers: req.headers });
      res.writeHead(200, { 'content-type': 'application/json' });
      if (req.url === '/_matrix/client/versions') res.end(JSON.stringify({ versions: ['v1.11'], unstable_features: {} }));
      else res.end(JSON.stringify({ via, url: req.url }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    );
    const address = server.address();
    return typeof address === 'object' && address ? address.port : 0;
  };
  return { seen, directPort: await listen('direct'), proxyPort: await listen('proxy') };
}

/** docs/nginx.conf with the test's ports, plain HTTP on loopback instead of TLS on 443. */
function renderSiteConfig(text: string, ports: { listen: number; proxy: number; homeserver: number }): string {
  const replaceOnce = (input: string, pattern: RegExp, by: string) => {
    const matches = input.match(new RegExp(pattern.source, 'gm'));
    assert.equal(matches?.length, 1, `docs/nginx.conf should have exactly one line matching ${pattern}`);
    return input.replace(new RegExp(pattern.source, 'm'), by);
  };
  let out = text;
  out = replaceOnce(out, /server 127\.0\.0\.1:8009;/, `server 127.0.0.1:${ports.proxy};`);
  out = replaceOnce(out, /server 127\.0\.0\.1:8008;/, `server 127.0.0.1:${ports.homeserver};`);
  out = replaceOnce(out, /^\s*listen 443 ssl;/, `    listen 127.0.0.1:${ports.listen};`);
  out = replaceOnce(out, /^\s*listen \[::\]:443 ssl;.*$/, '');
  out = out.replace(/^\s*ssl_certificate(_key)? .*$/gm, '');
  return out;
}

async function waitForPort(port: number, child: ChildProcess, stderr: () => string) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) assert.fail(`nginx exited with ${child.exitCode}:\n${stderr()}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      }).on('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) assert.fail(`nginx did not listen on ${port} within 10 s:\n${stderr()}`);
    await sleep(50);
  }
}

/** nginx in the foreground from a temporary prefix, stopped (and the prefix removed) after the test. */
async function startNginx(t: TestContext, bin: string, ports: { proxy: number; homeserver: number }): Promise<string> {
  const prefix = await mkdtemp(path.join(os.tmpdir(), 'syncv3-nginx-'));
  // Run as root, nginx's workers run as nobody and must reach the temp dirs under the prefix.
  await chmod(prefix, 0o755);
  const listen = await freePort();
  await writeFile(path.join(prefix, 'site.conf'), renderSiteConfig(await readFile(CONFIG, 'utf8'), { listen, ...ports }));
  const temp = (name: string) => `${name}_temp_path ${path.join(prefix, name)};`;
  await writeFile(
    path.join(prefix, 'nginx.conf'),
    [
      'daemon off;',
      'worker_processes 1;',
      `pid ${path.join(prefix, 'nginx.pid')};`,
      'error_log stderr warn;',
      'events { worker_connections 64; }',
      'http {',
      '  access_log off;',
      `  ${temp('client_body')} ${temp('proxy')} ${temp('fastcgi')} ${temp('uwsgi')} ${temp('scgi')}`,
      `  include ${path.join(prefix, 'site.conf')};`,
      '}',
      '',
    ].join('\n'),
  );
  const child = spawn(bin, ['-p', `${prefix}/`, '-c', path.join(prefix, 'nginx.conf'), '-e', 'stderr'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  t.after(async () => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    await rm(prefix, { recursive: true, force: true });
  });
  await waitForPort(listen, child, () => stderr);
  return `http://127.0.0.1:${listen}`;
}

describe('nginx in front of the proxy and the homeserver (docs/nginx.conf)', { skip }, () => {
  it('routes /versions and sliding sync to the proxy, everything else to the homeserver', async (t) => {
    if (!nginxBin) assert.fail('nginx is required (SYNCV3_E2E_REQUIRED=1) but not installed: apt-get install nginx-light');
    const hs = await startHomeserver(t);
    // nginx, on loopback, is the proxy's trusted reverse proxy: its X-Forwarded-For is believed.
    const proxy = await startTestProxy(t, { SYNCV3_SERVER: `http://127.0.0.1:${hs.proxyPort}`, SYNCV3_TRUSTED_PROXIES: '127.0.0.1' });
    const proxyPort = Number(new URL(proxy.url).port);
    const base = await startNginx(t, nginxBin, { proxy: proxyPort, homeserver: hs.directPort });
    const reached = (url: string) => hs.seen.filter((s) => s.url === url).map((s) => s.via);

    // Discovery: answered by the proxy from the homeserver's /versions, flag added.
    const versions = await fetch(`${base}/_matrix/client/versions`);
    assert.equal(versions.status, 200);
    const body = (await versions.json()) as { versions: string[]; unstable_features: Record<string, boolean> };
    assert.deepEqual(body, { versions: ['v1.11'], unstable_features: { [FLAG]: true } });
    assert.deepEqual(reached('/_matrix/client/versions'), ['proxy']);
    // The client's address came through nginx and then the proxy.
    assert.equal(hs.seen.at(-1)?.headers['x-forwarded-for'], '127.0.0.1, 127.0.0.1');

    // Sliding sync: the proxy's own endpoint (which wants a token), never the homeserver.
    const sssPath = '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync';
    const sss = await fetch(`${base}${sssPath}?timeout=0`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    assert.equal(sss.status, 401);
    assert.equal(((await sss.json()) as { errcode: string }).errcode, 'M_MISSING_TOKEN');
    assert.deepEqual(reached(`${sssPath}?timeout=0`), []);

    // MSC3575 goes to the proxy too (which serves it or, lacking a route, forwards it itself).
    const legacyPath = '/_matrix/client/unstable/org.matrix.msc3575/sync';
    await (await fetch(`${base}${legacyPath}`, { method: 'POST', body: '{}' })).arrayBuffer();
    assert.ok(!reached(legacyPath).includes('direct'), 'MSC3575 must not bypass the proxy');

    // The proxy's /client/ pages, server.json included, as the Go proxy's README routed them.
    const serverJson = await fetch(`${base}/client/server.json`);
    assert.equal(serverJson.status, 200);
    assert.equal(typeof ((await serverJson.json()) as { version?: unknown }).version, 'string');
    assert.deepEqual(reached('/client/server.json'), []);

    // Everything else, v2 /sync included: the homeserver, directly, with path and query intact.
    const direct = [
      ['GET', '/_matrix/client/v3/sync?since=s1&timeout=0'],
      ['GET', '/_matrix/client/r0/sync'],
      ['GET', '/_matrix/client/v3/rooms/%21room%3Aexample.org/messages?dir=b&limit=10'],
      ['PUT', '/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/txn1'],
      ['POST', '/_matrix/media/v3/upload?filename=a.png'],
      ['GET', '/_synapse/client/oidc/callback?code=x'],
      ['GET', '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync/not-the-endpoint'],
    ] as const;
    for (const [method, url] of direct) {
      const res = await fetch(`${base}${url}`, { method, body: method === 'GET' ? undefined : '{"body":"hi"}' });
      assert.equal(res.status, 200, url);
      assert.deepEqual(await res.json(), { via: 'direct', url }, url);
      assert.deepEqual(reached(url), ['direct'], url);
    }
  });
});
