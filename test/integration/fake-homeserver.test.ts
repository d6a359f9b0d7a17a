// The fake homeserver and the sync builders that the integration tests lean on.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { parseSyncResponse } from '../../src/upstream/sync-response.js';
import { createRoomState, event, member, resetBuilders, stateEvent, stripped, syncResponse } from '../support/builders.js';
import { type FakeHomeserver, startFakeHomeserver } from '../support/fake-homeserver.js';

async function start(t: TestContext, opts: { maxWaitMs?: number } = {}): Promise<FakeHomeserver> {
  const hs = await startFakeHomeserver(opts);
  t.after(() => hs.close());
  hs.addToken('tok', '@alice:fake', 'DEV');
  return hs;
}

async function get(hs: FakeHomeserver, path: string, token?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${hs.url}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const sync = (hs: FakeHomeserver, query = '', token = 'tok') => get(hs, `/_matrix/client/v3/sync${query}`, token);

async function timed<T>(p: Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const value = await p;
  return [value, performance.now() - t0];
}

describe('fake homeserver', () => {
  it('answers whoami for known, unknown, missing and expired tokens', async (t) => {
    const hs = await start(t);
    hs.addToken('tok2', '@bob:fake', 'BOBDEV');
    assert.deepEqual(await get(hs, '/_matrix/client/v3/account/whoami', 'tok'), {
      status: 200,
      body: { user_id: '@alice:fake', device_id: 'DEV' },
    });
    const viaQuery = await get(hs, '/_matrix/client/v3/account/whoami?access_token=tok2');
    assert.equal(viaQuery.body.user_id, '@bob:fake');
    const unknown = await get(hs, '/_matrix/client/v3/account/whoami', 'nope');
    assert.deepEqual([unknown.status, unknown.body.errcode, unknown.body.soft_logout], [401, 'M_UNKNOWN_TOKEN', false]);
    const missing = await get(hs, '/_matrix/client/v3/account/whoami');
    assert.deepEqual([missing.status, missing.body.errcode], [401, 'M_MISSING_TOKEN']);

    hs.expireToken('tok', true);
    hs.expireToken('tok2');
    const soft = await get(hs, '/_matrix/client/v3/account/whoami', 'tok');
    assert.deepEqual([soft.status, soft.body.errcode, soft.body.soft_logout], [401, 'M_UNKNOWN_TOKEN', true]);
    const hard = await sync(hs, '', 'tok2');
    assert.deepEqual([hard.status, hard.body.errcode, hard.body.soft_logout], [401, 'M_UNKNOWN_TOKEN', false]);
    assert.deepEqual(
      hs.requests.map((r) => r.token),
      ['tok', 'tok2', 'nope', undefined, 'tok', 'tok2'],
    );
  });

  it('answers versions, and 404 M_UNRECOGNIZED for anything else', async (t) => {
    const hs = await start(t);
    assert.deepEqual(await get(hs, '/_matrix/client/versions'), {
      status: 200,
      body: { versions: ['v1.11', 'v1.12'], unstable_features: {} },
    });
    const other = await get(hs, '/_matrix/client/v3/rooms/!r:fake/messages', 'tok');
    assert.deepEqual([other.status, other.body.errcode], [404, 'M_UNRECOGNIZED']);
  });

  it('serves queued syncs in order, numbering next_batch unless the body sets it', async (t) => {
    const hs = await start(t);
    hs.queueSync('tok', { account_data: { events: [{ type: 'a', content: {} }] } });
    hs.queueSync('tok', { next_batch: 'mine' });
    hs.queueSync('tok', {});
    const first = await sync(hs, '?timeout=0');
    assert.deepEqual(first.body, { account_data: { events: [{ type: 'a', content: {} }] }, next_batch: '1' });
    assert.equal((await sync(hs, '?since=1&timeout=0')).body.next_batch, 'mine');
    assert.equal((await get(hs, '/_matrix/client/r0/sync?since=mine', 'tok')).body.next_batch, '3');
    assert.deepEqual((await sync(hs, '?since=3&timeout=0')).body, { next_batch: '3' }, 'an empty queue answers the since back');
    assert.deepEqual((await sync(hs, '?timeout=0')).body, { next_batch: '0' });
    assert.equal(hs.syncCount('tok'), 5);
    assert.equal(hs.syncCount('other'), 0);
    assert.deepEqual(hs.requests[1]?.query, { since: '1', timeout: '0' });
  });

  it('holds a long-poll until a body is queued', async (t) => {
    const hs = await start(t);
    const pending = timed(sync(hs, '?since=s&timeout=20000'));
    await hs.waitForSync('tok', 's');
    setTimeout(() => hs.queueSync('tok', { next_batch: 'woken' }), 100);
    const [res, ms] = await pending;
    assert.equal(res.body.next_batch, 'woken');
    assert.ok(ms >= 90 && ms < 5000, `answered after ${ms} ms`);
  });

  it('answers a long-poll empty after min(timeout, maxWaitMs)', async (t) => {
    const hs = await start(t, { maxWaitMs: 300 });
    const [capped, cappedMs] = await timed(sync(hs, '?since=7&timeout=60000'));
    assert.deepEqual(capped.body, { next_batch: '7' });
    assert.ok(cappedMs >= 280 && cappedMs < 3000, `capped long-poll took ${cappedMs} ms`);
    const [short, shortMs] = await timed(sync(hs, '?timeout=100'));
    assert.deepEqual(short.body, { next_batch: '0' });
    assert.ok(shortMs >= 90 && shortMs < 280, `short long-poll took ${shortMs} ms`);
  });

  it('serves each kind of fault before queued bodies', async (t) => {
    const hs = await start(t);
    hs.queueSync('tok', { next_batch: 'after-faults' });
    hs.queueFault('tok', { status: 500 });
    hs.queueFault('tok', {
      status: 429,
      body: { errcode: 'M_LIMIT_EXCEEDED', error: 'slow', retry_after_ms: 1234 },
      headers: { 'retry-after': '2' },
    });
    hs.queueFault('tok', { status: 401 });
    hs.queueFault('tok', { raw: '{"next_batch":' });
    hs.queueFault('tok', { hangUp: true });
    hs.queueFault('tok', { delayMs: 200 });

    const e500 = await sync(hs);
    assert.deepEqual([e500.status, e500.body.errcode], [500, 'M_UNKNOWN']);
    const limited = await fetch(`${hs.url}/_matrix/client/v3/sync`, { headers: { authorization: 'Bearer tok' } });
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get('retry-after'), '2');
    assert.deepEqual(await limited.json(), { errcode: 'M_LIMIT_EXCEEDED', error: 'slow', retry_after_ms: 1234 });
    const e401 = await sync(hs);
    assert.deepEqual([e401.status, e401.body.errcode, e401.body.soft_logout], [401, 'M_UNKNOWN_TOKEN', false]);
    const raw = await fetch(`${hs.url}/_matrix/client/v3/sync?access_token=tok`);
    assert.deepEqual([raw.status, raw.headers.get('content-type'), await raw.text()], [200, 'application/json', '{"next_batch":']);
    await assert.rejects(sync(hs), TypeError, 'a hang-up fails the request');
    const [delayed, ms] = await timed(sync(hs));
    assert.equal(delayed.body.next_batch, 'after-faults');
    assert.ok(ms >= 190, `delayed answer came after ${ms} ms`);
    assert.equal((await sync(hs, '?since=after-faults')).body.next_batch, 'after-faults', 'faults are used up');
  });

  it('wakes a waiting long-poll with a queued fault', async (t) => {
    const hs = await start(t);
    const pending = timed(sync(hs, '?since=1&timeout=20000'));
    await hs.waitForSync('tok', '1');
    hs.queueFault('tok', { status: 502 });
    const [res, ms] = await pending;
    assert.equal(res.status, 502);
    assert.ok(ms < 5000);
  });

  it('does not let an abandoned long-poll swallow a queued body', async (t) => {
    const hs = await start(t);
    const abort = new AbortController();
    const abandoned = fetch(`${hs.url}/_matrix/client/v3/sync?timeout=20000&access_token=tok`, { signal: abort.signal });
    await hs.waitForSync('tok');
    abort.abort();
    await assert.rejects(abandoned);
    await new Promise((r) => setTimeout(r, 50));
    hs.queueSync('tok', { next_batch: 'kept' });
    assert.equal((await sync(hs, '?timeout=0')).body.next_batch, 'kept');
  });

  it('waitForSync resolves for past and future requests and rejects after its timeout', async (t) => {
    const hs = await start(t);
    await sync(hs, '?timeout=0');
    const initial = await hs.waitForSync('tok');
    assert.equal(initial.query.since, undefined);
    const later = hs.waitForSync('tok', '42');
    await sync(hs, '?since=41&timeout=0');
    await sync(hs, '?since=42&timeout=0');
    assert.deepEqual((await later).query, { since: '42', timeout: '0' });
    await assert.rejects(hs.waitForSync('tok', '99', 50), /since=99.*seen: \[\(initial\), 41, 42\]/);
  });

  it('consults custom routes first, newest first, falling through on undefined', async (t) => {
    const hs = await start(t);
    hs.route('GET', '/_matrix/client/v3/rooms/', (req) => ({ status: 200, body: { old: true, path: req.path } }));
    hs.route('GET', '/_matrix/client/v3/rooms/', (req) => (req.path.endsWith('/state') ? { status: 200, body: { state: [] } } : undefined));
    hs.route('put', '/_matrix/client/v3/rooms/', async (req) => ({ status: 200, body: { echoed: req.body } }));
    assert.deepEqual((await get(hs, '/_matrix/client/v3/rooms/!r/state', 'tok')).body, { state: [] });
    assert.deepEqual((await get(hs, '/_matrix/client/v3/rooms/!r/members', 'tok')).body, {
      old: true,
      path: '/_matrix/client/v3/rooms/!r/members',
    });
    const put = await fetch(`${hs.url}/_matrix/client/v3/rooms/!r/send/m.room.message/1`, {
      method: 'PUT',
      headers: { authorization: 'Bearer tok', 'content-type': 'application/json' },
      body: JSON.stringify({ body: 'hi' }),
    });
    assert.deepEqual(await put.json(), { echoed: { body: 'hi' } });
    assert.deepEqual(hs.requests.at(-1)?.body, { body: 'hi' });
    hs.expireToken('tok');
    assert.equal((await get(hs, '/_matrix/client/v3/rooms/!r/state', 'tok')).status, 401, 'a dead token beats custom routes');
  });

  it('releases a pending long-poll on close, quickly', async () => {
    const hs = await startFakeHomeserver();
    hs.addToken('tok', '@alice:fake', 'DEV');
    const pending = sync(hs, '?since=5&timeout=30000');
    await hs.waitForSync('tok', '5');
    const [, closeMs] = await timed(hs.close());
    const res = await pending;
    assert.deepEqual([res.status, res.body], [200, { next_batch: '5' }]);
    assert.ok(closeMs < 1000, `close took ${closeMs} ms`);
    await hs.close();
  });
});

describe('sync builders', () => {
  it('build the v2 wire shape, which the proxy parses without dropping anything', () => {
    resetBuilders();
    const state = createRoomState('!r:fake', '@alice:fake', { name: 'Room', encrypted: true, type: 'm.space', joined: ['@bob:fake'] });
    assert.deepEqual(
      state.map((e) => [e.type, e.state_key, e.sender]),
      [
        ['m.room.create', '', '@alice:fake'],
        ['m.room.member', '@alice:fake', '@alice:fake'],
        ['m.room.power_levels', '', '@alice:fake'],
        ['m.room.join_rules', '', '@alice:fake'],
        ['m.room.history_visibility', '', '@alice:fake'],
        ['m.room.name', '', '@alice:fake'],
        ['m.room.encryption', '', '@alice:fake'],
        ['m.room.member', '@bob:fake', '@bob:fake'],
      ],
    );
    assert.deepEqual(state[0], {
      type: 'm.room.create',
      content: { creator: '@alice:fake', room_version: '10', type: 'm.space' },
      sender: '@alice:fake',
      event_id: '$ev1:fake',
      origin_server_ts: 1_700_000_001_000,
      state_key: '',
    });
    const msg = event('m.room.message', { body: 'hi' }, { unsigned: { age: 5 } });
    assert.deepEqual(
      [msg.event_id, msg.origin_server_ts, msg.sender, msg.unsigned],
      ['$ev9:fake', 1_700_000_009_000, '@alice:fake', { age: 5 }],
    );
    const invite = member('@carol:fake', 'invite', { sender: '@alice:fake', isDirect: true });
    assert.deepEqual(
      [invite.state_key, invite.sender, invite.content],
      ['@carol:fake', '@alice:fake', { membership: 'invite', is_direct: true }],
    );

    const body = syncResponse({
      join: {
        '!r:fake': {
          state,
          timeline: [msg],
          limited: true,
          prevBatch: 'p1',
          ephemeral: [{ type: 'm.typing', content: { user_ids: [] } }],
          accountData: [{ type: 'm.tag', content: { tags: {} } }],
          unread: { notification_count: 2, highlight_count: 1 },
          summary: { heroes: ['@bob:fake'], joinedCount: 2, invitedCount: 0 },
        },
      },
      invite: { '!i:fake': [stripped(stateEvent('m.room.name', '', { name: 'Inv' })), stripped(invite)] },
      leave: { '!l:fake': { timeline: [member('@alice:fake', 'leave')] } },
      accountData: [{ type: 'm.direct', content: {} }],
      toDevice: [{ type: 'm.room_key', sender: '@bob:fake', content: {} }],
      deviceLists: { changed: ['@bob:fake'] },
      otkCounts: { signed_curve25519: 50 },
      fallbackKeyTypes: ['signed_curve25519'],
      nextBatch: 'n1',
    });
    const rooms = body.rooms as Record<string, Record<string, Record<string, unknown>>>;
    assert.deepEqual(Object.keys(rooms.join?.['!r:fake'] ?? {}), [
      'state',
      'timeline',
      'ephemeral',
      'account_data',
      'unread_notifications',
      'summary',
    ]);
    assert.deepEqual(rooms.join?.['!r:fake']?.timeline, { events: [msg], limited: true, prev_batch: 'p1' });
    assert.deepEqual(rooms.join?.['!r:fake']?.summary, {
      'm.heroes': ['@bob:fake'],
      'm.joined_member_count': 2,
      'm.invited_member_count': 0,
    });
    assert.deepEqual(rooms.invite?.['!i:fake'], {
      invite_state: {
        events: [
          { type: 'm.room.name', state_key: '', sender: '@alice:fake', content: { name: 'Inv' } },
          { type: 'm.room.member', state_key: '@carol:fake', sender: '@alice:fake', content: { membership: 'invite', is_direct: true } },
        ],
      },
    });
    assert.deepEqual(body.device_lists, { changed: ['@bob:fake'], left: [] });
    assert.deepEqual(
      [body.account_data, body.to_device, body.device_one_time_keys_count, body.device_unused_fallback_key_types, body.next_batch],
      [
        { events: [{ type: 'm.direct', content: {} }] },
        { events: [{ type: 'm.room_key', sender: '@bob:fake', content: {} }] },
        { signed_curve25519: 50 },
        ['signed_curve25519'],
        'n1',
      ],
    );
    assert.deepEqual(syncResponse(), {}, 'nothing given, nothing sent (the fake adds next_batch)');

    const parsed = parseSyncResponse(body);
    assert.ok(!('error' in parsed), JSON.stringify(parsed));
    assert.equal(parsed.stats.droppedEvents, 0);
  });
});
