// MSC4186 request validation through the whole proxy: what is rejected (status, errcode, the
// field named), what is ignored or defaulted, and that a rejected request stores nothing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { addUser, type SsResult, type Stack, slidingSync, startStack } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const list = (extra: Record<string, unknown> = {}) => ({ ranges: [[0, 9]], timeline_limit: 1, required_state: [], ...extra });

function withRooms(stack: Stack, deviceId = 'A') {
  const msgs = ['one', 'two', 'three'].map((b) => message(b));
  return addUser(
    stack.fake,
    ME,
    deviceId,
    syncResponse({ join: { '!a:fake': { state: createRoomState('!a:fake', ME, { name: 'A' }), timeline: msgs } } }),
  );
}

function assertError(res: SsResult, status: number, errcode: string | string[], field?: string) {
  const why = JSON.stringify(res.body);
  assert.equal(res.status, status, why);
  assert.ok((Array.isArray(errcode) ? errcode : [errcode]).includes(res.body.errcode ?? ''), why);
  assert.equal(typeof res.body.error, 'string', why);
  if (field) assert.ok(res.body.error?.includes(field), `error names ${field}: ${why}`);
}

async function stored(stack: Stack) {
  const q = async (sql: string) => (await stack.proxy.pool.query(sql)).rows[0].n as number;
  return {
    connections: await q('SELECT count(*)::int AS n FROM connections'),
    tokens: await q('SELECT count(*)::int AS n FROM tokens'),
    whoami: stack.fake.requests.filter((r) => r.path.endsWith('/whoami')).length,
  };
}

describe('MSC4186 request validation', () => {
  it('rejects bodies that are not JSON objects, and stores nothing', async (t) => {
    const stack = await startStack(t);
    const alice = withRooms(stack);
    const send = (raw: string, contentType?: string | null) => slidingSync(stack.proxy, alice.token, undefined, { raw, contentType });
    assertError(await send('{"lists": '), 400, 'M_NOT_JSON');
    for (const raw of ['[]', '[1, 2]', '"lists"', '5', 'null', 'true']) assertError(await send(raw), 400, 'M_BAD_JSON');
    assert.deepEqual(await stored(stack), { connections: 0, tokens: 0, whoami: 0 });
  });

  it('reads the body as JSON whatever its Content-Type, like Synapse', async (t) => {
    const stack = await startStack(t);
    const alice = withRooms(stack);
    const send = (raw: string, contentType: string | null) => slidingSync(stack.proxy, alice.token, undefined, { raw, contentType });
    const body = JSON.stringify({ lists: { a: list() } });
    for (const type of ['application/x-www-form-urlencoded', 'text/plain', 'text/plain;charset=UTF-8', null]) {
      const res = await send(body, type);
      assert.equal(res.status, 200, `${type}: ${JSON.stringify(res.body)}`);
      assert.ok(res.body.rooms['!a:fake'], `${type}: the request was understood`);
    }
    assertError(await send('not json', 'text/plain'), 400, 'M_NOT_JSON');
    assertError(await send('not json', null), 400, 'M_NOT_JSON');
  });

  it('rejects a missing body with M_NOT_JSON', async (t) => {
    const stack = await startStack(t);
    const alice = withRooms(stack);
    assertError(await slidingSync(stack.proxy, alice.token, undefined, { raw: '' }), 400, 'M_NOT_JSON');
    assertError(await slidingSync(stack.proxy, alice.token, undefined, { raw: '', contentType: null }), 400, 'M_NOT_JSON');
    assert.equal((await stored(stack)).connections, 0);
  });

  it('rejects wrong types with M_BAD_JSON naming the field', async (t) => {
    const stack = await startStack(t);
    const alice = withRooms(stack);
    const cases: [string, unknown][] = [
      ['timeline_limit', { lists: { a: list({ timeline_limit: '5' }) } }],
      ['timeline_limit', { lists: { a: list({ timeline_limit: 1.5 }) } }],
      ['ranges', { lists: { a: list({ ranges: [[0, 'a']] }) } }],
      ['ranges', { lists: { a: list({ ranges: 'all' }) } }],
      ['lists', { lists: [1] }],
      ['lists', { lists: 'all' }],
      ['required_state', { lists: { a: list({ required_state: [['m.room.name', 5]] }) } }],
      ['is_dm', { lists: { a: list({ filters: { is_dm: 'yes' } }) } }],
      ['room_types', { lists: { a: list({ filters: { room_types: 'm.space' } }) } }],
      ['timeline_limit', { room_subscriptions: { '!a:fake': { timeline_limit: '5', required_state: [] } } }],
      ['room_subscriptions', { room_subscriptions: [] }],
      ['conn_id', { conn_id: 5 }],
      ['extensions', { extensions: [] }],
      ['enabled', { extensions: { account_data: { enabled: 'yes' } } }],
      ['lists', { extensions: { receipts: { enabled: true, lists: 'all' } } }],
    ];
    for (const [field, body] of cases) assertError(await slidingSync(stack.proxy, alice.token, body), 400, 'M_BAD_JSON', field);
    assert.deepEqual(await stored(stack), { connections: 0, tokens: 0, whoami: 0 });
  });

  it('rejects values out of range', async (t) => {
    const stack = await startStack(t);
    const alice = withRooms(stack);
    const send = (body: unknown) => slidingSync(stack.proxy, alice.token, body);
    assertError(await send({ lists: { a: list({ timeline_limit: 1001 }) } }), 400, 'M_INVALID_PARAM', 'timeline_limit');
    assertError(await send({ lists: { a: list({ timeline_limit: -1 }) } }), 400, ['M_INVALID_PARAM', 'M_BAD_JSON'], 'timeline_limit');
    assertError(await send({ lists: { a: list({ ranges: [[-1, 3]] }) } }), 400, ['M_INVALID_PARAM', 'M_BAD_JSON'], 'ranges');
    assertError(await send({ lists: { a: list({ ranges: [[5, 1]] }) } }), 400, ['M_INVALID_PARAM', 'M_BAD_JSON'], 'ranges');
    const many = Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`l${i}`, list()]));
    assertError(await send({ lists: many }), 400, ['M_INVALID_PARAM', 'M_BAD_JSON'], 'lists');
    assertError(await send({ lists: { ['k'.repeat(65)]: list() } }), 400, ['M_INVALID_PARAM', 'M_BAD_JSON'], 'lists');
    const short = { lists: { a: list({ required_state: [['m.room.name']] }) } };
    assertError(await send(short), 400, ['M_INVALID_PARAM', 'M_BAD_JSON', 'M_MISSING_PARAM'], 'required_state');
    const since = { extensions: { to_device: { enabled: true, since: 'abc' } } };
    assertError(await send(since), 400, 'M_INVALID_PARAM', 'since');
    assert.deepEqual(await stored(stack), { connections: 0, tokens: 0, whoami: 0 });

    // The limits themselves are fine.
    const hundred = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`l${i}`, list()]));
    assert.equal((await send({ lists: hundred })).status, 200);
    assert.equal((await send({ lists: { ['k'.repeat(64)]: list({ timeline_limit: 1000 }) } })).status, 200);
  });

  it('rejects a body over 1 MiB with 413 M_TOO_LARGE', async (t) => {
    const stack = await startStack(t);
    const alice = withRooms(stack);
    const huge = { lists: { a: list() }, padding: 'x'.repeat(1024 * 1024 + 10) };
    assertError(await slidingSync(stack.proxy, alice.token, huge), 413, 'M_TOO_LARGE');
    assert.deepEqual(await stored(stack), { connections: 0, tokens: 0, whoami: 0 });
  });

  it('rejects missing and unknown tokens', async (t) => {
    const stack = await startStack(t);
    assertError(await slidingSync(stack.proxy, undefined, { lists: { a: list() } }), 401, 'M_MISSING_TOKEN');
    assertError(await slidingSync(stack.proxy, 'who-is-this', { lists: { a: list() } }), 401, 'M_UNKNOWN_TOKEN');
    const { connections, tokens } = await stored(stack);
    assert.deepEqual({ connections, tokens }, { connections: 0, tokens: 0 });
  });

  it('leaves an existing connection untouched when a request on it is rejected', async (t) => {
    const stack = await startStack(t);
    const alice = withRooms(stack);
    const first = await slidingSync(stack.proxy, alice.token, { lists: { a: list() } });
    const before = (await stack.proxy.pool.query('SELECT confirmed_pos, pending_pos FROM connections')).rows;
    assertError(
      await slidingSync(stack.proxy, alice.token, { lists: { a: list({ timeline_limit: 'x' }) } }, { pos: first.body.pos }),
      400,
      'M_BAD_JSON',
    );
    assertError(await slidingSync(stack.proxy, alice.token, { lists: { a: list() } }, { pos: 'nope' }), 400, 'M_UNKNOWN_POS');
    const after = (await stack.proxy.pool.query('SELECT confirmed_pos, pending_pos FROM connections')).rows;
    assert.deepEqual(after, before);
    assert.equal((await slidingSync(stack.proxy, alice.token, { lists: { a: list() } }, { pos: first.body.pos, timeout: 0 })).status, 200);
  });

  it('ignores unknown fields and extensions, and defaults timeline_limit and required_state', async (t) => {
    const stack = await startStack(t);
    const alice = withRooms(stack);
    const res = await slidingSync(stack.proxy, alice.token, {
      txn_id: 'txn1',
      'org.example.future': { anything: [1, 2] },
      lists: { a: { ranges: [[0, 9]], slow_get_all_rooms: false, bump_event_types: ['m.room.message'], 'x.unknown': true } },
      room_subscriptions: { '!a:fake': {} },
      extensions: { 'org.example.unknown': { enabled: true }, presence: { enabled: true } },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const room = res.body.rooms['!a:fake'];
    assert.equal(room?.initial, true);
    assert.ok((room?.timeline?.length ?? 0) <= 1, 'a small default timeline');
    assert.equal(room?.required_state, undefined, 'no state unless asked for');
    assert.deepEqual(Object.keys(res.body.extensions), [], 'unknown extensions produce nothing');
    assert.equal((res.body as { txn_id?: string }).txn_id, 'txn1', 'txn_id is echoed');
    const next = await slidingSync(stack.proxy, alice.token, { lists: {} }, { pos: res.body.pos, timeout: 0 });
    assert.ok(!('txn_id' in next.body), 'and only when sent');
  });
});
