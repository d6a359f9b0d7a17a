// What operators watch: Prometheus metrics on SYNCV3_PROM, traces to SYNCV3_OTLP_URL, error
// reports to SYNCV3_SENTRY_DSN, profiles on SYNCV3_PPROF and the access log, each against the
// real proxy and the fake homeserver. None of them may carry an access token.
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { pino } from 'pino';
import type { Logger } from '../../src/telemetry/logger.js';
import { createRoomState, message, stateEvent, syncResponse } from '../support/builders.js';
import { type FakeHomeserver, startFakeHomeserver } from '../support/fake-homeserver.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';

const PATH = '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync';
const FAST = { backoffBaseMs: 10, backoffMaxMs: 40, longPollMs: 300 };
const TOKEN = 'tok-operations-SECRET-6d1f0c2a9b';
const BODY = { conn_id: 'room-list', lists: { all: { ranges: [[0, 10]], timeline_limit: 5, required_state: [['m.room.name', '']] } } };

async function setup(t: TestContext, env: Record<string, string> = {}, logger?: Logger) {
  const fake = await startFakeHomeserver({ maxWaitMs: 300 });
  t.after(() => fake.close());
  const proxy = await startTestProxy(t, { SYNCV3_SERVER: fake.url, ...env }, { poller: FAST, ...(logger ? { logger } : {}) });
  return { fake, proxy };
}

function alice(fake: FakeHomeserver) {
  fake.addToken(TOKEN, '@alice:fake', 'ADEV');
  fake.queueSync(
    TOKEN,
    syncResponse({
      join: { '!a:fake': { state: createRoomState('!a:fake', '@alice:fake', { name: 'Room A' }), timeline: [message('hello')] } },
      toDevice: [{ type: 'm.room_key_request', sender: '@bob:fake', content: { action: 'request' } }],
    }),
  );
}

async function slidingSync(proxy: TestProxy, query = '') {
  const res = await fetch(`${proxy.url}${PATH}${query}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(BODY),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** The value of one sample in Prometheus text, matching the given labels (others may be present). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

async function scrape(proxy: TestProxy): Promise<string> {
  assert.ok(proxy.promUrl, 'SYNCV3_PROM listener is up');
  const res = await fetch(`${proxy.promUrl}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  return res.text();
}

async function waitUntil(check: () => Promise<boolean> | boolean, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

interface Captured {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A loopback HTTP server that records every request and answers 200 `{}` (an OTLP collector, a Sentry). */
async function startRecorder(t: TestContext) {
  const requests: Captured[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let raw = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') raw = gunzipSync(raw);
      requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: raw.toString('utf8') });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

describe('operations', () => {
  it('serves Prometheus metrics on SYNCV3_PROM that move as pollers and requests run', async (t) => {
    const { fake, proxy } = await setup(t, { SYNCV3_PROM: '127.0.0.1:0' });
    alice(fake);
    const first = await slidingSync(proxy);
    assert.equal(first.status, 200);

    let text = await scrape(proxy);
    assert.equal(sample(text, 'sliding_sync_poller_num_pollers'), 1);
    assert.ok((sample(text, 'sliding_sync_poller_total_num_polls') ?? 0) >= 1);
    assert.equal(sample(text, 'sliding_sync_poller_process_duration_secs_count', { initial: 'true', first: 'true' }), 1);
    assert.equal(sample(text, 'sliding_sync_api_num_active_conns'), 1);
    assert.equal(sample(text, 'sliding_sync_api_setup_duration_secs_count', { initial: 'true' }), 1);
    assert.equal(sample(text, 'sliding_sync_api_process_duration_secs_count', { initial: 'true' }), 1);
    assert.ok((sample(text, 'sliding_sync_poller_num_payloads', { payload_type: 'room.changed' }) ?? 0) >= 1);
    assert.ok((sample(text, 'sliding_sync_api_num_payloads', { payload_type: 'stream.advanced' }) ?? 0) >= 1);
    assert.equal(sample(text, 'syncv3_upstream_request_duration_seconds_count', { endpoint: 'whoami', status: '200' }), 1);
    assert.ok((sample(text, 'syncv3_upstream_request_duration_seconds_count', { endpoint: 'sync', status: '200' }) ?? 0) >= 1);
    assert.ok((sample(text, 'syncv3_ingest_duration_seconds_count') ?? 0) >= 1);
    assert.ok((sample(text, 'syncv3_bus_lag_seconds_count') ?? 0) >= 1);
    assert.equal(sample(text, 'syncv3_cache_users'), 1);
    assert.equal(sample(text, 'syncv3_cache_rooms'), 1);
    assert.equal(sample(text, 'syncv3_to_device_backlog_messages'), 1, 'the unacknowledged to-device message');
    assert.ok((sample(text, 'syncv3_db_pool_connections', { state: 'idle' }) ?? -1) >= 0);
    // The scrape's own backlog query may be waiting for a connection being opened.
    assert.ok((sample(text, 'syncv3_db_pool_waiting_clients') ?? -1) >= 0);
    // Node's own, from collectDefaultMetrics.
    assert.ok(sample(text, 'nodejs_eventloop_lag_seconds') !== undefined);
    assert.ok((sample(text, 'nodejs_heap_size_used_bytes') ?? 0) > 0);

    const again = await slidingSync(proxy, `?pos=${first.body.pos}&timeout=0`);
    assert.equal(again.status, 200);
    fake.queueFault(TOKEN, { status: 502 });
    await waitUntil(async () => {
      text = await scrape(proxy);
      return sample(text, 'syncv3_upstream_errors_total', { endpoint: 'sync', kind: 'server', status: '502' }) === 1;
    });
    assert.equal(sample(text, 'sliding_sync_api_process_duration_secs_count', { initial: 'false' }), 1);
    assert.ok((sample(text, 'syncv3_upstream_request_duration_seconds_count', { endpoint: 'sync', status: '502' }) ?? 0) >= 1);
    assert.ok((sample(text, 'syncv3_poller_failures_total', { kind: 'server' }) ?? 0) >= 1);
    assert.ok(!text.includes(TOKEN), 'no token in the metrics');

    const other = await fetch(`${proxy.promUrl}/`);
    assert.equal(other.status, 404);
    await other.text();
  });

  it("moves the Go proxy's poller size, outstanding request and pending device metrics", async (t) => {
    const { fake, proxy } = await setup(t, { SYNCV3_PROM: '127.0.0.1:0' });
    fake.addToken(TOKEN, '@alice:fake', 'ADEV');
    // The initial sync takes a while: the device's first request waits for it meanwhile.
    fake.queueFault(TOKEN, { delayMs: 1500 });
    fake.queueSync(
      TOKEN,
      syncResponse({ join: { '!a:fake': { state: createRoomState('!a:fake', '@alice:fake'), timeline: [message('hello')] } } }),
    );
    let text = await scrape(proxy);
    assert.equal(sample(text, 'sliding_sync_api_num_devices_pending_ensure_polling'), 0);
    assert.equal(sample(text, 'sliding_sync_api_slow_requests'), 0, 'exported from the start');
    const first = slidingSync(proxy);
    await waitUntil(async () => sample(await scrape(proxy), 'sliding_sync_api_num_devices_pending_ensure_polling') === 1);
    assert.equal((await first).status, 200);
    text = await scrape(proxy);
    assert.equal(sample(text, 'sliding_sync_api_num_devices_pending_ensure_polling'), 0, 'no longer pending');
    assert.equal(sample(text, 'sliding_sync_poller_timeline_size_count', { limited: 'unlimited' }), 1);
    assert.equal(sample(text, 'sliding_sync_poller_timeline_size_sum', { limited: 'unlimited' }), 1);
    assert.equal(sample(text, 'sliding_sync_poller_gappy_state_size_count'), 0, 'an initial sync is not a gap');

    // A gappy incremental sync: a limited timeline and the state block before it.
    const gap = {
      '!a:fake': {
        state: [stateEvent('m.room.name', '', { name: 'Renamed' }), stateEvent('m.room.topic', '', { topic: 'T' })],
        timeline: [message('after the gap'), message('and more')],
        limited: true,
        prevBatch: 'gap',
      },
    };
    fake.queueSync(TOKEN, syncResponse({ join: gap }));
    await waitUntil(async () => sample(await scrape(proxy), 'sliding_sync_poller_gappy_state_size_count') === 1);
    text = await scrape(proxy);
    assert.equal(sample(text, 'sliding_sync_poller_gappy_state_size_sum'), 2);
    assert.equal(sample(text, 'sliding_sync_poller_gappy_state_size_bucket', { le: '1' }), 0);
    assert.equal(sample(text, 'sliding_sync_poller_timeline_size_count', { limited: 'limited' }), 1);
    assert.equal(sample(text, 'sliding_sync_poller_timeline_size_sum', { limited: 'limited' }), 2);
    // The poller long-polls the fake homeserver almost all the time.
    await waitUntil(async () => sample(await scrape(proxy), 'sliding_sync_poller_num_outstanding_sync_v2_reqs') === 1);
    await proxy.stop();
    text = await proxy.metrics.registry.metrics();
    assert.equal(sample(text, 'sliding_sync_poller_num_outstanding_sync_v2_reqs'), 0, 'none left once stopped');
  });

  it('opens no operator listener when SYNCV3_PROM and SYNCV3_PPROF are unset', async (t) => {
    const { proxy } = await setup(t);
    assert.equal(proxy.promUrl, undefined);
    assert.equal(proxy.pprofUrl, undefined);
    assert.equal(proxy.telemetry.tracer.enabled, false);
    assert.equal(proxy.telemetry.errors.enabled, false);
  });

  it('exports spans of requests, polls, ingests, upstream calls and SQL to SYNCV3_OTLP_URL with basic auth', async (t) => {
    const collector = await startRecorder(t);
    const { fake, proxy } = await setup(t, {
      SYNCV3_OTLP_URL: collector.url,
      SYNCV3_OTLP_USERNAME: 'otel-user',
      SYNCV3_OTLP_PASSWORD: 'otel-pass',
    });
    alice(fake);
    assert.equal((await slidingSync(proxy)).status, 200);
    await proxy.stop(); // flushes the batch of spans
    const posts = collector.requests.filter((r) => r.method === 'POST' && r.path === '/v1/traces');
    assert.ok(posts.length >= 1, 'spans arrived at /v1/traces');
    assert.equal(posts[0]?.headers.authorization, `Basic ${Buffer.from('otel-user:otel-pass').toString('base64')}`);

    type OtlpSpan = { name: string; spanId: string; parentSpanId?: string; attributes: { key: string; value: { stringValue?: string } }[] };
    const spans = posts.flatMap(
      (p) =>
        (JSON.parse(p.body) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] }).resourceSpans.flatMap((r) =>
          r.scopeSpans.flatMap((s) => s.spans),
        ) ?? [],
    );
    const attr = (s: OtlpSpan, key: string) => s.attributes.find((a) => a.key === key)?.value.stringValue;
    const request = spans.find((s) => s.name === `POST ${PATH}`);
    assert.ok(request, 'a span for the sliding sync request');
    assert.deepEqual(
      [attr(request, 'user_id'), attr(request, 'device_id'), attr(request, 'conn_id')],
      ['@alice:fake', 'ADEV', 'room-list'],
    );
    const poll = spans.find((s) => s.name === 'poll' && attr(s, 'user_id') === '@alice:fake');
    assert.ok(poll, 'a span per poll');
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const ingest = spans.find((s) => s.name === 'ingest');
    assert.equal(ingest && byId.get(ingest.parentSpanId ?? '')?.name, 'poll', 'ingest nests under its poll');
    const upstream = spans.find((s) => s.name === 'GET /_matrix/client/v3/sync');
    assert.equal(upstream && byId.get(upstream.parentSpanId ?? '')?.name, 'poll', 'the upstream call nests under its poll');
    const sql = spans.filter((s) => attr(s, 'db.system.name') === 'postgresql');
    assert.ok(sql.length > 0, 'SQL spans');
    assert.ok(
      sql.some((s) => byId.get(s.parentSpanId ?? '')?.name === 'ingest'),
      'SQL of the ingest transaction nests under it',
    );
    for (const p of posts) assert.ok(!p.body.includes(TOKEN), 'no token in spans');
  });

  it('reports a failed poll to SYNCV3_SENTRY_DSN with the user and device, and no token', async (t) => {
    const sentry = await startRecorder(t);
    const dsn = `http://0123456789abcdef@${new URL(sentry.url).host}/1`;
    const { fake, proxy } = await setup(t, { SYNCV3_SENTRY_DSN: dsn });
    alice(fake);
    assert.equal((await slidingSync(proxy)).status, 200);
    // Valid JSON with rooms of the wrong shape: a response the proxy cannot use.
    fake.queueFault(TOKEN, { status: 200, body: { next_batch: 'after-poison', rooms: { join: [] } } });
    const envelopes = () => sentry.requests.filter((r) => r.path.startsWith('/api/1/envelope/'));
    await waitUntil(() => envelopes().some((e) => e.body.includes('bad_response')));
    await proxy.stop();
    const envelope = envelopes().find((e) => e.body.includes('bad_response')) as Captured;
    const event = JSON.parse(envelope.body.split('\n').find((l) => l.includes('"exception"')) ?? '{}') as {
      user?: { id?: string };
      tags?: Record<string, string>;
      exception?: { values?: { type?: string; value?: string }[] };
    };
    assert.equal(event.user?.id, '@alice:fake');
    assert.equal(event.tags?.device_id, 'ADEV');
    assert.equal(event.tags?.failure, 'bad_response');
    assert.equal(event.exception?.values?.[0]?.type, 'UpstreamError');
    for (const e of sentry.requests) {
      assert.ok(!e.body.includes(TOKEN), 'no token in what Sentry receives');
      assert.ok(!JSON.stringify(e.headers).includes(TOKEN));
    }
  });

  it('reports an unexpected 500 to SYNCV3_SENTRY_DSN and flushes it when the proxy stops at once', async (t) => {
    const sentry = await startRecorder(t);
    const dsn = `http://0123456789abcdef@${new URL(sentry.url).host}/1`;
    const { fake, proxy } = await setup(t, { SYNCV3_SENTRY_DSN: dsn });
    alice(fake);
    assert.equal((await slidingSync(proxy)).status, 200);
    // A bug's stand-in: a query that fails for no reason a client could cause or cure.
    await proxy.pool.query('DROP TABLE to_device_messages');
    const res = await fetch(`${proxy.url}${PATH}?timeout=0`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ conn_id: 'e2ee', extensions: { to_device: { enabled: true } } }),
    });
    assert.equal(res.status, 500);
    assert.deepEqual(await res.json(), { errcode: 'M_UNKNOWN', error: 'Internal server error' });
    // Captured, not yet sent: stopping must deliver it before the process would exit.
    await proxy.stop();
    const event = sentry.requests
      .filter((r) => r.path.startsWith('/api/1/envelope/'))
      .flatMap((e) => e.body.split('\n'))
      .filter((l) => l.includes('"exception"'))
      .map(
        (l) =>
          JSON.parse(l) as {
            user?: { id?: string };
            tags?: Record<string, string>;
            exception?: { values?: { value?: string }[] };
          },
      )
      .find((e) => e.tags?.path === PATH);
    assert.ok(event, 'the 500 arrived before stop() returned');
    assert.equal(event.tags?.method, 'POST');
    assert.match(event.exception?.values?.[0]?.value ?? '', /to_device_messages/);
    for (const e of sentry.requests) assert.ok(!e.body.includes(TOKEN), 'no token in what Sentry receives');
    // The error handler reports the device a route remembered (http/request-device.ts); the
    // sliding sync route does so once it calls rememberDevice() after authenticating.
    await t.test('with the user and device of the request', () => {
      assert.equal(event.user?.id, '@alice:fake');
      assert.equal(event.tags?.device_id, 'ADEV');
    });
  });

  it('serves CPU profiles and heap snapshots on SYNCV3_PPROF, with the tokens it knows overwritten', async (t) => {
    const { fake, proxy } = await setup(t, { SYNCV3_PPROF: '127.0.0.1:0' });
    alice(fake);
    assert.equal((await slidingSync(proxy)).status, 200);
    assert.ok(proxy.pprofUrl);

    const cpu = await fetch(`${proxy.pprofUrl}/debug/pprof/profile?seconds=1`);
    assert.equal(cpu.status, 200);
    assert.match(cpu.headers.get('content-disposition') ?? '', /\.cpuprofile"$/);
    const cpuText = await cpu.text();
    const profile = JSON.parse(cpuText) as { nodes?: unknown[]; samples?: unknown[]; startTime?: number };
    assert.ok(Array.isArray(profile.nodes) && profile.nodes.length > 0, 'a V8 CPU profile');
    assert.ok(!cpuText.includes(TOKEN));

    const heap = await fetch(`${proxy.pprofUrl}/debug/pprof/heap`);
    assert.equal(heap.status, 200);
    assert.match(heap.headers.get('content-disposition') ?? '', /\.heapsnapshot"$/);
    const heapText = await heap.text();
    assert.ok(heapText.startsWith('{"snapshot":'), 'a V8 heap snapshot');
    assert.ok(heapText.trimEnd().endsWith('}'), 'complete');
    assert.ok(!heapText.includes(TOKEN), 'the poller token is overwritten');
    assert.ok(!heapText.includes('test-secret'), 'SYNCV3_SECRET is overwritten');

    const bad = await fetch(`${proxy.pprofUrl}/debug/pprof/profile?seconds=0`);
    assert.equal(bad.status, 400);
    await bad.text();
  });

  it('logs one access line per sliding sync request with the Go proxy fields, never the token', async (t) => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const { fake, proxy } = await setup(t, {}, logger);
    alice(fake);
    const first = await slidingSync(proxy);
    const again = await slidingSync(proxy, `?pos=${first.body.pos}&timeout=200`);
    assert.equal(again.status, 200);
    const unknownPos = await slidingSync(proxy, '?pos=999999');
    assert.equal(unknownPos.status, 400);
    await waitUntil(() => lines.filter((l) => l.includes('"msg":"sliding sync"')).length === 3);

    const access = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'sliding sync');
    assert.equal(access[0]?.level, 30, 'info');
    assert.deepEqual(
      { u: access[0]?.u, dev: access[0]?.dev, p: access[0]?.p, q: access[0]?.q, c: access[0]?.c, l: access[0]?.l },
      { u: '@alice:fake', dev: 'ADEV', p: undefined, q: first.body.pos, c: 'room-list', l: { all: 1 } },
    );
    assert.deepEqual([access[0]?.r, access[0]?.d, access[0]?.status], [1, 0, 200]);
    assert.match(String(access[0]?.duration), /^\d+\.\dms\(\d+\.\dms\+\d+\.\dms\)$/);
    // The long-poll timed out after ~200 ms: processing excludes that wait.
    const waited = access[1] as Record<string, unknown>;
    assert.equal(waited.p, first.body.pos);
    const [total, , processing] = (/^([\d.]+)ms\(([\d.]+)ms\+([\d.]+)ms\)$/.exec(String(waited.duration)) ?? []).slice(1).map(Number);
    assert.ok((total ?? 0) >= 190, `total ${total} includes the wait`);
    assert.ok((processing ?? Number.POSITIVE_INFINITY) < (total ?? 0) - 150, `processing ${processing} excludes the wait`);
    assert.deepEqual([access[2]?.status, access[2]?.u, access[2]?.p], [400, '@alice:fake', '999999']);
    for (const line of lines) assert.ok(!line.includes(TOKEN), 'no token in any log line');
  });
});
