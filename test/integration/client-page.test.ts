// The /client/ page through the real HTTP API: its files with their security headers, nothing
// else from disk, and GET /client/status, which tells a device about its own first sync only,
// while that sync is still arriving (bytes so far) and once it is stored (rooms).
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import { describe, it, type TestContext } from 'node:test';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { eventually } from '../support/matrix-users.js';
import { startTestProxy } from '../support/proxy.js';

const DEVICES: Record<string, { user_id: string; device_id: string }> = {
  'tok-alice': { user_id: '@alice:fake', device_id: 'ADEV' },
  'tok-bob': { user_id: '@bob:fake', device_id: 'BDEV' },
};

/**
 * A homeserver whose initial /sync for Alice sends the first `headBytes` of its body, then
 * holds the rest until release() is called; Bob's is answered at once.
 */
async function startSlowHomeserver(t: TestContext, headBytes: number) {
  const body = JSON.stringify({
    ...syncResponse({
      join: { '!a:fake': { state: createRoomState('!a:fake', '@alice:fake', { name: 'Room A' }), timeline: [message('hello')] } },
    }),
    next_batch: 'a1',
  });
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const json = (res: ServerResponse, status: number, value: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(value));
  };
  const server = createServer((req, res) => {
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
    const device = DEVICES[token];
    if (!device) return json(res, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'unknown token' });
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname.endsWith('/account/whoami')) return json(res, 200, device);
    if (!url.pathname.endsWith('/sync')) return json(res, 404, { errcode: 'M_UNRECOGNIZED', error: 'no' });
    if (url.searchParams.has('since')) {
      // Later polls: nothing new, after a while.
      setTimeout(() => json(res, 200, { next_batch: url.searchParams.get('since') }), 200).unref();
      return;
    }
    if (token !== 'tok-alice') return json(res, 200, { next_batch: 'b1' });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write(body.slice(0, headBytes));
    void released.then(() => res.end(body.slice(headBytes)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  t.after(
    () =>
      new Promise<void>((resolve) => {
        release();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`, release, bodyBytes: body.length };
}

async function get(base: string, path: string, token?: string) {
  const res = await fetch(`${base}${path}`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    redirect: 'manual',
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

describe('the /client/ page', () => {
  it('serves its files with a strict CSP and nosniff, and nothing else from disk', async (t) => {
    const proxy = await startTestProxy(t);
    const page = await get(proxy.url, '/client/');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(page.text, /<script type="module" src="app.js">/);
    const csp = page.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /connect-src 'self'(;|$)/);
    assert.equal(page.headers.get('x-content-type-options'), 'nosniff');

    const redirect = await get(proxy.url, '/client');
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.get('location'), '/client/');

    for (const [path, type] of [
      ['/client/app.js', /^text\/javascript/],
      ['/client/sync-state.js', /^text\/javascript/],
      ['/client/style.css', /^text\/css/],
    ] as const) {
      const file = await get(proxy.url, path);
      assert.equal(file.status, 200, path);
      assert.match(file.headers.get('content-type') ?? '', type, path);
      assert.equal(file.headers.get('x-content-type-options'), 'nosniff', path);
    }
    for (const path of ['/client/sync-state.d.ts', '/client/../package.json', '/client/%2e%2e/package.json', '/client/nope.js']) {
      const missing = await get(proxy.url, path);
      assert.equal(missing.status, 404, path);
      assert.equal(JSON.parse(missing.text).errcode, 'M_UNRECOGNIZED', path);
    }
  });

  it('status needs a valid token, and shows the first sync arriving, then stored', async (t) => {
    const head = 200;
    const hs = await startSlowHomeserver(t, head);
    const proxy = await startTestProxy(t, { SYNCV3_SERVER: hs.url });

    const missing = await get(proxy.url, '/client/status');
    assert.equal(missing.status, 401);
    assert.equal(JSON.parse(missing.text).errcode, 'M_MISSING_TOKEN');
    const unknown = await get(proxy.url, '/client/status', 'tok-nobody');
    assert.equal(unknown.status, 401);
    assert.equal(JSON.parse(unknown.text).errcode, 'M_UNKNOWN_TOKEN');

    // The first status call starts the device's poller, as the page's first sync would.
    const arriving = await eventually('the first bytes of the initial sync', async () => {
      const status = JSON.parse((await get(proxy.url, '/client/status', 'tok-alice')).text);
      return status.initial_sync?.bytes_received === head ? status : undefined;
    });
    assert.equal(arriving.user_id, '@alice:fake');
    assert.equal(arriving.device_id, 'ADEV');
    assert.equal(arriving.initial_sync.done, false);
    assert.equal(typeof arriving.initial_sync.waited_ms, 'number');
    assert.equal(arriving.initial_sync.rooms, undefined);

    // Another device is told about itself only.
    const bob = await eventually('bob stored', async () => {
      const status = JSON.parse((await get(proxy.url, '/client/status', 'tok-bob')).text);
      return status.initial_sync?.done ? status : undefined;
    });
    assert.equal(bob.user_id, '@bob:fake');
    assert.equal(bob.initial_sync.rooms, 0);

    hs.release();
    const stored = await eventually('the initial sync stored', async () => {
      const status = JSON.parse((await get(proxy.url, '/client/status', 'tok-alice')).text);
      return status.initial_sync?.done ? status : undefined;
    });
    assert.equal(stored.initial_sync.bytes_received, hs.bodyBytes);
    assert.equal(stored.initial_sync.rooms, 1);
  });
});
