// The front door through the real HTTP API: /versions with sliding sync advertised,
// /client/server.json, and every other Client-Server request forwarded to the homeserver
// (here a small node:http upstream that records what reaches it), bodies streamed both ways.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, request, type ServerResponse } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { insertToken } from '../../src/store/devices-table.js';
import { hashToken } from '../../src/store/token-cipher.js';
import { freePort } from '../support/ports.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';

const MIB = 1024 * 1024;
const SSS_PATH = '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync';
const FLAG = 'org.matrix.simplified_msc3575';

type Handler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
}

/** A homeserver stand-in: records every request line and headers, then runs `handler`. */
async function startUpstream(t: TestContext, handler: Handler, socketPath?: string) {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders });
    Promise.resolve(handler(req, res)).catch((err) => res.destroy(err));
  });
  await new Promise<void>((resolve) => (socketPath ? server.listen(socketPath, resolve) : server.listen(0, '127.0.0.1', resolve)));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${port}`, seen };
}

async function readAll(stream: AsyncIterable<Buffer | string>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks);
}

/** Answers with what it received, as JSON; `x-answer-status` picks the status. */
const echo: Handler = async (req, res) => {
  const body = await readAll(req);
  const status = Number(req.headers['x-answer-status'] ?? 200);
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: body.toString('utf8') }));
};

interface Answer {
  status: number;
  statusMessage: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/**
 * One request with node:http, which (unlike fetch) sends hop-by-hop headers as given. `body`
 * may be a function that writes the body itself, to pace a streamed upload.
 */
function call(
  base: string,
  opts: {
    method?: string;
    path: string;
    headers?: string[];
    body?: string | Buffer | ((req: import('node:http').ClientRequest) => Promise<void>);
    onResponse?: (res: IncomingMessage) => Promise<Buffer>;
  },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    // Headers given as a raw list get no defaults from node, not even Host or Content-Length.
    const headers = ['Host', new URL(base).host, ...(opts.headers ?? [])];
    const framed = headers.some((h, i) => i % 2 === 0 && /^(content-length|transfer-encoding)$/i.test(h));
    if (opts.body !== undefined && typeof opts.body !== 'function' && !framed)
      headers.push('Content-Length', String(Buffer.byteLength(opts.body)));
    // Host, port and path apart: a URL string would have its dot segments resolved here already.
    const { hostname, port } = new URL(base);
    const req = request({ hostname, port, path: opts.path, method: opts.method ?? 'GET', headers }, (res) => {
      (opts.onResponse ?? readAll)(res).then(
        (body) => resolve({ status: res.statusCode ?? 0, statusMessage: res.statusMessage ?? '', headers: res.headers, body }),
        reject,
      );
    });
    req.on('error', reject);
    if (typeof opts.body === 'function') {
      opts.body(req).then(
        () => req.end(),
        (err) => req.destroy(err),
      );
    } else {
      req.end(opts.body);
    }
  });
}

const json = (a: Answer) => JSON.parse(a.body.toString('utf8')) as Record<string, unknown>;

async function proxyFor(t: TestContext, upstreamUrl: string, env: Record<string, string> = {}): Promise<TestProxy> {
  return startTestProxy(t, { SYNCV3_SERVER: upstreamUrl, ...env });
}

describe('front door: forwarding', () => {
  it('forwards GET, POST, PUT and DELETE with path, query and headers, and passes status and body back', async (t) => {
    const upstream = await startUpstream(t, echo);
    const proxy = await proxyFor(t, upstream.url);

    const path = '/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/txn%201?foo=bar&baz=%20q&foo=2';
    for (const method of ['GET', 'POST', 'PUT', 'DELETE']) {
      const body = method === 'GET' ? undefined : JSON.stringify({ msgtype: 'm.text', body: `via ${method}` });
      const res = await call(proxy.url, {
        method,
        path,
        headers: [
          'Authorization',
          'Bearer tok',
          'Content-Type',
          'application/json',
          'X-Custom',
          'one',
          'X-Custom',
          'two',
          'User-Agent',
          'front-door-test',
        ],
        body,
      });
      assert.equal(res.status, 200, method);
      const got = json(res) as { method: string; url: string; headers: Record<string, string>; body: string };
      assert.equal(got.method, method);
      assert.equal(got.url, path, 'path and query arrive exactly as sent');
      assert.equal(got.headers.authorization, 'Bearer tok');
      assert.equal(got.headers['x-custom'], 'one, two');
      assert.equal(got.headers['user-agent'], 'front-door-test');
      assert.equal(got.headers['x-forwarded-proto'], 'http', 'no reverse proxy in front: the scheme of the connection to us');
      assert.equal(got.body, body ?? '', `${method} body`);
    }

    // A body that is not JSON whatever its Content-Type goes through untouched (no parsing here).
    const notJson = await call(proxy.url, {
      method: 'POST',
      path: '/_matrix/client/v3/keys/upload',
      headers: ['Content-Type', 'application/json'],
      body: '{"not json',
    });
    assert.equal(notJson.status, 200);
    assert.equal((json(notJson) as { body: string }).body, '{"not json');

    // A long path (wildcard routes must not cap it) and the /_synapse/client/ prefix.
    const long = `/_matrix/media/v3/download/example.org/${'a'.repeat(400)}?allow_redirect=true`;
    assert.equal((json(await call(proxy.url, { path: long })) as { url: string }).url, long);
    const synapse = '/_synapse/client/oidc/callback?code=abc&state=xyz';
    assert.equal((json(await call(proxy.url, { path: synapse })) as { url: string }).url, synapse);

    // Outside the forwarded prefixes nothing reaches the homeserver, nor with dot segments that
    // would climb out of them wherever they get resolved.
    const before = upstream.seen.length;
    for (const outside of [
      '/not-matrix/thing',
      '/_synapse/admin/v1/users',
      '/_matrix/../_synapse/admin/v1/users',
      '/_matrix/client/%2e%2e/%2E%2E/_synapse/admin/v1/users',
      '/_matrix/..%2F_synapse/admin/v1/users',
      '/_synapse/client/./../admin',
    ]) {
      const res = await call(proxy.url, { path: outside });
      assert.deepEqual([res.status, json(res).errcode], [404, 'M_UNRECOGNIZED'], outside);
    }
    assert.equal(upstream.seen.length, before);
  });

  it('forwards to a unix socket homeserver, and under the path of a base URL that has one', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-front-door-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const socket = await startUpstream(t, echo, path.join(dir, 'hs.sock'));
    const viaSocket = await proxyFor(t, path.join(dir, 'hs.sock'));
    const res = await call(viaSocket.url, { method: 'POST', path: '/_matrix/client/v3/login?x=1', body: '{"type":"m.login.password"}' });
    assert.equal(res.status, 200);
    assert.deepEqual(
      [socket.seen[0]?.url, (json(res) as { body: string }).body],
      ['/_matrix/client/v3/login?x=1', '{"type":"m.login.password"}'],
    );

    const prefixed = await startUpstream(t, echo);
    const viaPrefix = await proxyFor(t, `${prefixed.url}/matrix/`);
    await call(viaPrefix.url, { path: '/_matrix/client/v3/pushrules/?a=b' });
    assert.equal(prefixed.seen[0]?.url, '/matrix/_matrix/client/v3/pushrules/?a=b');
  });

  it("passes the homeserver's status codes, reason phrases, headers and error bodies through", async (t) => {
    const upstream = await startUpstream(t, async (req, res) => {
      await readAll(req);
      switch (req.url) {
        case '/_matrix/client/v3/forbidden':
          res.writeHead(403, { 'content-type': 'application/json' });
          return void res.end('{"errcode":"M_FORBIDDEN","error":"You are not invited to this room."}');
        case '/_matrix/client/v3/limited':
          res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '3' });
          return void res.end('{"errcode":"M_LIMIT_EXCEEDED","error":"Too Many Requests","retry_after_ms":3000}');
        case '/_matrix/client/v3/broken':
          res.writeHead(500, { 'content-type': 'text/html' });
          return void res.end('<h1>Internal Server Error</h1>');
        case '/_matrix/client/v3/created':
          res.writeHead(201, 'Created Nicely', [
            ['Content-Type', 'application/json'],
            ['Set-Cookie', 'a=1'],
            ['Set-Cookie', 'b=2'],
            ['X-Upstream', 'yes'],
          ]);
          return void res.end('{"event_id":"$abc"}');
        case '/_matrix/media/v3/redirect':
          res.writeHead(307, { location: 'https://cdn.example.org/file' });
          return void res.end();
        default:
          res.writeHead(204);
          return void res.end();
      }
    });
    const proxy = await proxyFor(t, upstream.url);

    const forbidden = await call(proxy.url, { path: '/_matrix/client/v3/forbidden' });
    assert.equal(forbidden.status, 403);
    assert.deepEqual(json(forbidden), { errcode: 'M_FORBIDDEN', error: 'You are not invited to this room.' });

    const limited = await call(proxy.url, { path: '/_matrix/client/v3/limited' });
    assert.equal(limited.status, 429);
    assert.equal(limited.headers['retry-after'], '3');
    assert.equal(json(limited).retry_after_ms, 3000);

    const broken = await call(proxy.url, { path: '/_matrix/client/v3/broken' });
    assert.deepEqual(
      [broken.status, broken.headers['content-type'], broken.body.toString()],
      [500, 'text/html', '<h1>Internal Server Error</h1>'],
    );

    const created = await call(proxy.url, { method: 'PUT', path: '/_matrix/client/v3/created', body: '{}' });
    assert.deepEqual([created.status, created.statusMessage], [201, 'Created Nicely']);
    assert.deepEqual(created.headers['set-cookie'], ['a=1', 'b=2']);
    assert.equal(created.headers['x-upstream'], 'yes');
    assert.equal(created.body.toString(), '{"event_id":"$abc"}');
    // Browser clients: the proxy's CORS headers fill in what the homeserver did not send.
    assert.equal(created.headers['access-control-allow-origin'], '*');

    const redirect = await call(proxy.url, { path: '/_matrix/media/v3/redirect' });
    assert.deepEqual([redirect.status, redirect.headers.location], [307, 'https://cdn.example.org/file'], 'redirects are not followed');

    const empty = await call(proxy.url, { method: 'DELETE', path: '/_matrix/client/v3/devices/X' });
    assert.deepEqual([empty.status, empty.body.length], [204, 0]);

    const head = await call(proxy.url, { method: 'HEAD', path: '/_matrix/client/v3/forbidden' });
    assert.deepEqual([head.status, head.body.length], [403, 0]);
    assert.equal(upstream.seen.at(-1)?.method, 'HEAD');
  });

  it('replaces the X-Forwarded-* of a client that is not a trusted proxy with what the proxy saw', async (t) => {
    const upstream = await startUpstream(t, echo);
    const untrusted = await proxyFor(t, upstream.url, { SYNCV3_TRUSTED_PROXIES: '10.0.0.0/8, 192.0.2.7' });
    const spoofed = ['X-Forwarded-For', '203.0.113.7', 'X-Forwarded-Proto', 'https', 'X-Forwarded-Host', 'evil.example'];
    assert.equal((await call(untrusted.url, { path: '/_matrix/client/v3/who', headers: spoofed })).status, 200);
    const seen = upstream.seen.at(-1);
    assert.equal(seen?.headers['x-forwarded-for'], '127.0.0.1', 'the peer address alone: the client cannot choose its IP');
    assert.equal(seen?.headers['x-forwarded-proto'], 'http');
    assert.equal(seen?.headers['x-forwarded-host'], new URL(untrusted.url).host);
  });

  it('sets X-Forwarded-* and drops hop-by-hop headers in both directions', async (t) => {
    const upstream = await startUpstream(t, async (req, res) => {
      await readAll(req);
      res.setHeader('Connection', 'keep-alive, X-Upstream-Hop');
      res.setHeader('X-Upstream-Hop', 'connection-only');
      res.setHeader('Keep-Alive', 'timeout=5');
      res.setHeader('Proxy-Authenticate', 'Basic realm="upstream"');
      res.setHeader('X-End-To-End', 'kept');
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
    });
    // Behind a reverse proxy of ours (here the test itself, on loopback).
    const proxy = await proxyFor(t, upstream.url, { SYNCV3_TRUSTED_PROXIES: '127.0.0.1' });
    const host = new URL(proxy.url).host;

    const res = await call(proxy.url, {
      method: 'POST',
      path: '/_matrix/client/v3/hop?x=1',
      headers: [
        'Connection',
        'keep-alive, X-Client-Hop',
        'X-Client-Hop',
        'connection-only',
        'Keep-Alive',
        'timeout=5',
        'TE',
        'trailers',
        'Proxy-Authorization',
        'Basic c2VjcmV0',
        'Proxy-Connection',
        'keep-alive',
        'X-Forwarded-For',
        '203.0.113.7, 198.51.100.2',
        'X-Forwarded-Proto',
        'https',
        'X-End-To-End',
        'kept',
      ],
      body: 'hello',
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'ok');
    for (const name of ['x-upstream-hop', 'proxy-authenticate']) assert.equal(res.headers[name], undefined, name);
    assert.notEqual(res.headers['keep-alive'], 'timeout=5', "the proxy's own connection, not the homeserver's");
    assert.equal(res.headers['x-end-to-end'], 'kept');

    const seen = upstream.seen.at(-1);
    assert.ok(seen);
    for (const name of ['x-client-hop', 'te', 'proxy-authorization', 'proxy-connection', 'trailer', 'upgrade', 'transfer-encoding']) {
      assert.equal(seen.headers[name], undefined, name);
    }
    assert.notEqual(seen.headers['keep-alive'], 'timeout=5');
    assert.equal(seen.headers['x-end-to-end'], 'kept');
    assert.equal(seen.headers['x-forwarded-for'], '203.0.113.7, 198.51.100.2, 127.0.0.1', 'the client address is appended');
    assert.equal(seen.headers['x-forwarded-proto'], 'https', 'the scheme the client used, as the reverse proxy in front of us said');
    assert.equal(seen.headers['x-forwarded-host'], host);
    assert.equal(seen.headers.host, new URL(upstream.url).host, 'Host names the homeserver');
    assert.equal(seen.headers['content-length'], '5');
  });

  it('streams a 20 MiB upload to the homeserver as it arrives, byte for byte', async (t) => {
    let firstBytes!: () => void;
    const upstreamGotData = new Promise<void>((resolve) => {
      firstBytes = resolve;
    });
    const upstream = await startUpstream(t, async (req, res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      let chunks = 0;
      for await (const chunk of req) {
        if (chunks === 0) firstBytes();
        hash.update(chunk as Buffer);
        bytes += (chunk as Buffer).length;
        chunks++;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ bytes, chunks, sha256: hash.digest('hex'), te: req.headers['transfer-encoding'] ?? null }));
    });
    const proxy = await proxyFor(t, upstream.url);

    // Chunked upload: the first MiB is sent, then nothing more until the homeserver has seen
    // bytes of it, which only a proxy that streams (rather than buffers) the body allows.
    const sent = createHash('sha256');
    const res = await call(proxy.url, {
      method: 'POST',
      path: '/_matrix/media/v3/upload?filename=big.bin',
      headers: ['Content-Type', 'application/octet-stream', 'Transfer-Encoding', 'chunked'],
      body: async (req) => {
        const first = randomBytes(MIB);
        sent.update(first);
        req.write(first);
        await upstreamGotData;
        for (let i = 1; i < 20; i++) {
          const chunk = randomBytes(MIB);
          sent.update(chunk);
          if (!req.write(chunk)) await new Promise((resolve) => req.once('drain', resolve));
        }
      },
    });
    assert.equal(res.status, 200);
    const got = json(res) as { bytes: number; chunks: number; sha256: string; te: string | null };
    assert.equal(got.bytes, 20 * MIB);
    assert.equal(got.sha256, sent.digest('hex'));
    assert.equal(got.te, 'chunked', 'a body of unknown length stays chunked');
    assert.ok(got.chunks > 1);

    // With a Content-Length the homeserver gets the length, and the body still streams.
    const body = randomBytes(20 * MIB);
    const sized = await call(proxy.url, {
      method: 'PUT',
      path: '/_matrix/media/v3/upload/example.org/abc',
      headers: ['Content-Type', 'application/octet-stream', 'Content-Length', String(body.length)],
      body,
    });
    const sizedGot = json(sized) as { bytes: number; sha256: string; te: string | null };
    assert.equal(sizedGot.bytes, body.length);
    assert.equal(sizedGot.sha256, createHash('sha256').update(body).digest('hex'));
    assert.equal(sizedGot.te, null);
    assert.equal(upstream.seen.at(-1)?.headers['content-length'], String(body.length));
  });

  it('streams a 20 MiB download to the client as it arrives, byte for byte', async (t) => {
    let clientGotData!: () => void;
    const clientSawBytes = new Promise<void>((resolve) => {
      clientGotData = resolve;
    });
    const sent = createHash('sha256');
    const upstream = await startUpstream(t, async (req, res) => {
      await readAll(req);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-disposition': 'attachment; filename="big.bin"' });
      // The first MiB, then nothing until the client has bytes of it: a buffering proxy would hang here.
      const first = randomBytes(MIB);
      sent.update(first);
      res.write(first);
      await clientSawBytes;
      for (let i = 1; i < 20; i++) {
        const chunk = randomBytes(MIB);
        sent.update(chunk);
        if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
      }
      res.end();
    });
    const proxy = await proxyFor(t, upstream.url);

    const received = createHash('sha256');
    let bytes = 0;
    const res = await call(proxy.url, {
      path: '/_matrix/client/v1/media/download/example.org/abc',
      onResponse: async (stream) => {
        for await (const chunk of stream) {
          if (bytes === 0) clientGotData();
          received.update(chunk as Buffer);
          bytes += (chunk as Buffer).length;
        }
        return Buffer.alloc(0);
      },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-disposition'], 'attachment; filename="big.bin"');
    assert.equal(bytes, 20 * MIB);
    assert.equal(received.digest('hex'), sent.digest('hex'));
  });

  it('answers 502 M_UNKNOWN when the homeserver is down', async (t) => {
    const port = await freePort();
    const proxy = await proxyFor(t, `http://127.0.0.1:${port}`);
    for (const path of ['/_matrix/client/v3/profile/@a:b', '/_matrix/client/versions']) {
      const res = await call(proxy.url, { path });
      assert.equal(res.status, 502, path);
      assert.match(String(res.headers['content-type']), /application\/json/);
      const body = json(res);
      assert.equal(body.errcode, 'M_UNKNOWN');
      assert.equal(typeof body.error, 'string');
    }
    const upload = await call(proxy.url, { method: 'POST', path: '/_matrix/media/v3/upload', body: randomBytes(64 * 1024) });
    assert.equal(upload.status, 502);
  });

  it('answers 504 when the homeserver does not answer in time, but lets a slow body stream on', async (t) => {
    const upstream = await startUpstream(t, async (req, res) => {
      await readAll(req);
      if (req.url?.startsWith('/_matrix/client/v3/hang')) return; // never answers
      // Headers at once, then a body dribbling in over more than the timeout.
      res.writeHead(200, { 'content-type': 'text/plain' });
      for (let i = 0; i < 6; i++) {
        res.write(`part ${i}\n`);
        await sleep(300);
      }
      res.end('done\n');
    });
    const proxy = await proxyFor(t, upstream.url, { SYNCV3_HTTP_TIMEOUT_SECS: '1' });

    const started = Date.now();
    const hung = await call(proxy.url, { path: '/_matrix/client/v3/hang' });
    assert.equal(hung.status, 504);
    assert.equal(json(hung).errcode, 'M_UNKNOWN');
    assert.ok(Date.now() - started < 5000);

    const slow = await call(proxy.url, { path: '/_matrix/client/v3/slow' });
    assert.equal(slow.status, 200);
    assert.equal(slow.body.toString(), 'part 0\npart 1\npart 2\npart 3\npart 4\npart 5\ndone\n');
  });

  it('cuts the client off when the homeserver fails mid-body, and stops the upstream request when the client leaves', async (t) => {
    let upstreamClosed!: () => void;
    const upstreamSawClose = new Promise<void>((resolve) => {
      upstreamClosed = resolve;
    });
    const upstream = await startUpstream(t, async (req, res) => {
      await readAll(req);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(10 * MIB) });
      res.write(randomBytes(MIB));
      if (req.url === '/_matrix/media/v3/download/dies') return void setTimeout(() => res.destroy(), 50);
      // Endless: only the client leaving ends it.
      res.on('close', upstreamClosed);
      while (!res.destroyed) {
        if (!res.write(randomBytes(64 * 1024))) await new Promise((resolve) => res.once('drain', resolve).once('close', resolve));
      }
    });
    const proxy = await proxyFor(t, upstream.url);

    // A truncated body must not look complete: the client's transfer fails.
    await assert.rejects(call(proxy.url, { path: '/_matrix/media/v3/download/dies' }));

    // The client hangs up after the first bytes: the proxy lets go of the homeserver too.
    await new Promise<void>((resolve, reject) => {
      const req = request(`${proxy.url}/_matrix/media/v3/download/endless`, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined);
      req.end();
      setTimeout(() => reject(new Error('no data')), 5000).unref();
    });
    await upstreamSawClose;
  });

  it("keeps the proxy's own routes ahead of the catch-all", async (t) => {
    const upstream = await startUpstream(t, echo);
    const proxy = await proxyFor(t, upstream.url);

    const health = await call(proxy.url, { path: '/health' });
    assert.deepEqual([health.status, json(health)], [200, { status: 'ok' }]);
    assert.equal((await call(proxy.url, { path: '/ready' })).status, 200);
    const sss = await call(proxy.url, {
      method: 'POST',
      path: `${SSS_PATH}?timeout=0`,
      headers: ['Content-Type', 'application/json'],
      body: '{}',
    });
    assert.deepEqual([sss.status, json(sss).errcode], [401, 'M_MISSING_TOKEN'], 'served by the proxy, which wants a token');
    // The sliding sync route still parses JSON bodies (the catch-all's raw parser is scoped).
    const bad = await call(proxy.url, { method: 'POST', path: SSS_PATH, headers: ['Authorization', 'Bearer x'], body: '{"a":' });
    assert.deepEqual([bad.status, json(bad).errcode], [400, 'M_NOT_JSON']);
    const versions = await call(proxy.url, { path: '/_matrix/client/versions' });
    assert.equal((json(versions).unstable_features as Record<string, boolean>)[FLAG], true);
    const preflight = await call(proxy.url, { method: 'OPTIONS', path: '/_matrix/client/v3/rooms/x/messages' });
    assert.equal(preflight.status, 204, 'CORS pre-flights are answered by the proxy');

    assert.deepEqual(
      upstream.seen.map((s) => `${s.method} ${s.url}`),
      ['GET /_matrix/client/versions'],
      'only /versions asked the homeserver',
    );
  });
});

describe('front door: /versions and /client/server.json', () => {
  it("adds the sliding sync flag to the homeserver's /versions, passing the client's headers on", async (t) => {
    let answer: { status: number; body: string } = {
      status: 200,
      body: JSON.stringify({ versions: ['v1.11', 'v1.12'], unstable_features: { 'org.matrix.msc3881': true, [FLAG]: false } }),
    };
    const upstream = await startUpstream(t, (_req, res) => {
      res.writeHead(answer.status, { 'content-type': 'application/json' });
      res.end(answer.body);
    });
    const proxy = await proxyFor(t, upstream.url);

    const res = await call(proxy.url, { path: '/_matrix/client/versions', headers: ['Authorization', 'Bearer tok'] });
    assert.equal(res.status, 200);
    assert.match(String(res.headers['content-type']), /application\/json/);
    assert.deepEqual(json(res), { versions: ['v1.11', 'v1.12'], unstable_features: { 'org.matrix.msc3881': true, [FLAG]: true } });
    assert.equal(upstream.seen.at(-1)?.headers.authorization, 'Bearer tok');
    assert.equal(upstream.seen.at(-1)?.url, '/_matrix/client/versions');

    answer = { status: 200, body: JSON.stringify({ versions: ['r0.6.1'] }) };
    assert.deepEqual(json(await call(proxy.url, { path: '/_matrix/client/versions' })), {
      versions: ['r0.6.1'],
      unstable_features: { [FLAG]: true },
    });

    answer = { status: 503, body: '{"errcode":"M_UNKNOWN","error":"starting up"}' };
    const failed = await call(proxy.url, { path: '/_matrix/client/versions' });
    assert.equal(failed.status, 503, "the homeserver's failure as it was");
    assert.equal(failed.body.toString(), '{"errcode":"M_UNKNOWN","error":"starting up"}');

    answer = { status: 200, body: '<html>not json</html>' };
    const garbage = await call(proxy.url, { path: '/_matrix/client/versions' });
    assert.deepEqual([garbage.status, json(garbage).errcode], [502, 'M_UNKNOWN']);
  });

  it('leaves out the flags of features the proxy does not serve (thread subscriptions, sticky events, profiles)', async (t) => {
    const upstream = await startUpstream(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          versions: ['v1.12'],
          unstable_features: {
            'org.matrix.msc4306': true,
            'org.matrix.msc4354': true,
            'org.matrix.msc4354.sticky_events': true,
            'org.matrix.msc4262': true,
            'org.matrix.msc43060': true,
            'org.matrix.msc3881': true,
            'org.matrix.msc2666.query_mutual_rooms': false,
          },
        }),
      );
    });
    const proxy = await proxyFor(t, upstream.url);

    const res = await call(proxy.url, { path: '/_matrix/client/versions' });
    assert.deepEqual(json(res).unstable_features, {
      'org.matrix.msc43060': true,
      'org.matrix.msc3881': true,
      'org.matrix.msc2666.query_mutual_rooms': false,
      [FLAG]: true,
    });
  });

  it('serves /client/server.json like the Go proxy: {server: SYNCV3_SERVER, version}, never what the request says', async (t) => {
    const upstream = await startUpstream(t, echo);
    const proxy = await proxyFor(t, upstream.url);
    const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

    const direct = await call(proxy.url, { path: '/client/server.json' });
    assert.equal(direct.status, 200);
    assert.deepEqual(json(direct), { server: proxy.config.server.kind === 'url' ? proxy.config.server.baseUrl : '', version: pkg.version });

    const spoofed = await call(proxy.url, {
      path: '/client/server.json',
      headers: ['Host', 'evil.example', 'X-Forwarded-Proto', 'https', 'X-Forwarded-Host', 'evil.example'],
    });
    assert.deepEqual(json(spoofed), json(direct));
    assert.ok(!spoofed.body.toString().includes('evil'), 'the Host header is not reflected');
    assert.equal(upstream.seen.length, 0);
  });
});

describe('front door: v2 /sync through the proxy', () => {
  async function v2Count(proxy: TestProxy): Promise<number> {
    return (await proxy.metrics.v2SyncThroughProxy.get()).values[0]?.value ?? 0;
  }

  async function until(what: string, check: () => Promise<boolean>) {
    const deadline = Date.now() + 5000;
    while (!(await check())) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await sleep(20);
    }
  }

  it('counts (and still forwards) a v2 /sync made with the token of a polled device, not with an unknown one', async (t) => {
    const upstream = await startUpstream(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"next_batch":"s1"}');
    });
    const proxy = await proxyFor(t, upstream.url);
    await insertToken(proxy.pool, {
      tokenHash: hashToken('polled-token'),
      tokenEncrypted: Buffer.from('not used here'),
      userId: '@alice:example.org',
      deviceId: 'ALICEDEV',
    });

    const unknown = await call(proxy.url, { path: '/_matrix/client/v3/sync?timeout=0', headers: ['Authorization', 'Bearer someone-else'] });
    assert.equal(unknown.status, 200);
    const anonymous = await call(proxy.url, { path: '/_matrix/client/v3/sync?timeout=0' });
    assert.equal(anonymous.status, 200);

    const polled = await call(proxy.url, { path: '/_matrix/client/v3/sync?timeout=0', headers: ['Authorization', 'Bearer polled-token'] });
    assert.deepEqual([polled.status, json(polled)], [200, { next_batch: 's1' }], 'the client is not broken');
    await until('the first count', async () => (await v2Count(proxy)) === 1);

    // r0 with the token in the query string counts too; other endpoints with that token do not.
    await call(proxy.url, { path: '/_matrix/client/r0/sync?since=s1&access_token=polled-token' });
    await until('the second count', async () => (await v2Count(proxy)) === 2);
    await call(proxy.url, { path: '/_matrix/client/v3/account/whoami', headers: ['Authorization', 'Bearer polled-token'] });
    await call(proxy.url, { path: '/_matrix/client/v3/sync', headers: ['Authorization', 'Bearer unknown-again'] });
    // A last polled one is counted after those two were looked at: had either counted, 4.
    await call(proxy.url, { path: '/_matrix/client/v3/sync', headers: ['Authorization', 'Bearer polled-token'] });
    await until('the third count', async () => (await v2Count(proxy)) >= 3);
    assert.equal(await v2Count(proxy), 3);
    assert.equal(upstream.seen.filter((s) => s.url.includes('/sync')).length, 6, 'every v2 /sync was forwarded');
  });

  it('logs a warning naming the polled device, once per device per hour, and never the token', async (t) => {
    const upstream = await startUpstream(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"next_batch":"s1"}');
    });
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const proxy = await startTestProxy(t, { SYNCV3_SERVER: upstream.url }, { logger });
    await insertToken(proxy.pool, {
      tokenHash: hashToken('polled-token'),
      tokenEncrypted: Buffer.from('not used here'),
      userId: '@alice:example.org',
      deviceId: 'ALICEDEV',
    });
    const warnings = () =>
      lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => String(l.msg).includes('v2 /sync through the proxy'));

    await call(proxy.url, { path: '/_matrix/client/v3/sync?timeout=0', headers: ['Authorization', 'Bearer someone-else'] });
    await call(proxy.url, { path: '/_matrix/client/v3/sync?timeout=0', headers: ['Authorization', 'Bearer polled-token'] });
    await until('the warning', async () => warnings().length === 1);
    const [warning] = warnings();
    assert.equal(warning?.level, 40, 'warn');
    assert.deepEqual([warning?.userId, warning?.deviceId], ['@alice:example.org', 'ALICEDEV']);
    assert.match(String(warning?.msg), /to-device messages it receives never reach sliding sync/);

    // The same device again within the hour: counted, not logged again.
    await call(proxy.url, { path: '/_matrix/client/v3/sync?since=s1&timeout=0', headers: ['Authorization', 'Bearer polled-token'] });
    await until('the second count', async () => (await v2Count(proxy)) === 2);
    assert.equal(warnings().length, 1);
    for (const line of lines) assert.ok(!line.includes('polled-token'), 'no token in any log line');
  });
});
