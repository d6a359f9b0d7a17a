// MSC4186 connections and `pos` through the whole proxy: retries of the latest pos, stale and
// foreign positions, restarts of a connection, independent conn_ids, connection state that
// outlives a proxy restart, the per-device cap, idle expiry, and abandoned long-polls.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { startFakeHomeserver } from '../support/fake-homeserver.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import {
  addUser,
  bodies,
  FAST_POLLER,
  pushSync,
  type SsResult,
  slidingSync,
  startStack,
  waitUntil,
} from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const REQ = { lists: { all: { ranges: [[0, 9]], timeline_limit: 1, required_state: [['m.room.name', '']] } } };

function initial() {
  return syncResponse({
    join: {
      '!a:fake': { state: createRoomState('!a:fake', ME, { name: 'A' }), timeline: [message('a0')] },
      '!b:fake': { state: createRoomState('!b:fake', ME, { name: 'B' }), timeline: [message('b0')] },
    },
  });
}

function assertUnknownPos(res: SsResult, why: string) {
  assert.equal(res.status, 400, why);
  assert.equal(res.body.errcode, 'M_UNKNOWN_POS', why);
}

/** The connection row as stored (positions as text, pending as JSON text). */
async function stored(proxy: TestProxy, connId = '') {
  const { rows } = await proxy.pool.query(
    'SELECT confirmed_pos::text AS confirmed, pending_pos::text AS pending, pending AS diff FROM connections WHERE conn_id = $1',
    [connId],
  );
  return rows[0] as { confirmed: string; pending: string | null; diff: string | null } | undefined;
}

async function counter(proxy: TestProxy, name: string): Promise<number> {
  const metric = await proxy.metrics.registry.getSingleMetric(name)?.get();
  return metric?.values[0]?.value ?? 0;
}

describe('MSC4186 connections', () => {
  it('accepts the latest pos again and again, with the same or a changed body', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', initial());
    const first = await slidingSync(proxy, alice.token, REQ);
    await pushSync(fake, alice, syncResponse({ join: { '!a:fake': { timeline: [message('one')] } } }));
    let latest: SsResult | undefined;
    for (let i = 0; i < 3; i++) {
      latest = await slidingSync(proxy, alice.token, REQ, { pos: first.body.pos, timeout: 0 });
      assert.equal(latest.status, 200, `retry ${i}`);
      assert.deepEqual(bodies(latest.body.rooms['!a:fake']?.timeline), ['one'], `retry ${i} gets the lost response again`);
    }
    const changed = { lists: { all: { ...REQ.lists.all, timeline_limit: 2 }, other: { ranges: [[0, 0]], timeline_limit: 1 } } };
    const retried = await slidingSync(proxy, alice.token, changed, { pos: first.body.pos, timeout: 0 });
    assert.equal(retried.status, 200);
    assert.ok(bodies(retried.body.rooms['!a:fake']?.timeline).includes('one'));
    assert.ok(retried.body.lists.other, 'the changed body is what is answered');
    assertUnknownPos(
      await slidingSync(proxy, alice.token, REQ, { pos: latest?.body.pos, timeout: 0 }),
      'a response replaced by a retry is gone',
    );
    const next = await slidingSync(proxy, alice.token, REQ, { pos: retried.body.pos, timeout: 0 });
    assert.equal(next.status, 200);
    assert.deepEqual(Object.keys(next.body.rooms), [], 'what the used response sent is not sent again');
    for (let i = 0; i < 3; i++) {
      const again = await slidingSync(proxy, alice.token, REQ, { pos: retried.body.pos, timeout: 0 });
      assert.equal(again.status, 200, `second retry ${i}`);
    }
  });

  it('rejects an older pos, and the connection goes on from its latest one', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', initial());
    const p1 = await slidingSync(proxy, alice.token, REQ);
    const p2 = await slidingSync(proxy, alice.token, REQ, { pos: p1.body.pos, timeout: 0 });
    const p3 = await slidingSync(proxy, alice.token, REQ, { pos: p2.body.pos, timeout: 0 });
    assert.equal(p3.status, 200);
    assertUnknownPos(await slidingSync(proxy, alice.token, REQ, { pos: p1.body.pos, timeout: 0 }), 'two responses back');
    assert.equal((await slidingSync(proxy, alice.token, REQ, { pos: p3.body.pos, timeout: 0 })).status, 200);
  });

  it("rejects another user's, device's or conn_id's pos, and garbage", async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', initial());
    const otherDevice = addUser(fake, ME, 'A2', initial());
    const bob = addUser(fake, '@bob:fake', 'B', initial());
    const mine = await slidingSync(proxy, alice.token, REQ);
    await slidingSync(proxy, otherDevice.token, REQ);
    await slidingSync(proxy, bob.token, REQ);
    const { rows: before } = await proxy.pool.query('SELECT count(*)::int AS n FROM connections');
    assertUnknownPos(await slidingSync(proxy, bob.token, REQ, { pos: mine.body.pos }), 'another user');
    assertUnknownPos(await slidingSync(proxy, otherDevice.token, REQ, { pos: mine.body.pos }), 'another device');
    assertUnknownPos(await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'other' }, { pos: mine.body.pos }), 'another conn_id');
    for (const garbage of ['garbage', '-1', '1.5', '0x10', '99999999999999999999', ' 1']) {
      assertUnknownPos(await slidingSync(proxy, alice.token, REQ, { pos: garbage }), `pos ${JSON.stringify(garbage)}`);
    }
    const { rows: after } = await proxy.pool.query('SELECT count(*)::int AS n FROM connections');
    assert.equal(after[0].n, before[0].n, 'rejected requests create no connection');
    const still = await slidingSync(proxy, alice.token, REQ, { pos: mine.body.pos, timeout: 0 });
    assert.equal(still.status, 200, 'the owner can still use it');
  });

  it('starts afresh on a request without pos, and keeps conn_ids independent', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', initial());
    const a1 = await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'a' });
    const b1 = await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'b' });
    for (const res of [a1, b1]) assert.deepEqual(Object.keys(res.body.rooms).sort(), ['!a:fake', '!b:fake']);
    await pushSync(fake, alice, syncResponse({ join: { '!b:fake': { timeline: [message('b1')] } } }));
    const a2 = await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'a' }, { pos: a1.body.pos, timeout: 0 });
    const b2 = await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'b' }, { pos: b1.body.pos, timeout: 0 });
    for (const res of [a2, b2]) {
      assert.deepEqual(Object.keys(res.body.rooms), ['!b:fake']);
      assert.deepEqual(bodies(res.body.rooms['!b:fake']?.timeline), ['b1']);
    }
    assertUnknownPos(await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'b' }, { pos: a2.body.pos }), "conn a's pos on conn b");

    const restarted = await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'a' });
    assert.equal(restarted.status, 200);
    for (const id of ['!a:fake', '!b:fake']) assert.equal(restarted.body.rooms[id]?.initial, true, `${id} is initial again`);
    assert.equal(restarted.body.rooms['!a:fake']?.name, 'A');
    assertUnknownPos(
      await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'a' }, { pos: a2.body.pos }),
      'the replaced connection is gone',
    );
    const b3 = await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'b' }, { pos: b2.body.pos, timeout: 0 });
    assert.equal(b3.status, 200, 'restarting conn a leaves conn b alone');
    assert.deepEqual(Object.keys(b3.body.rooms), []);
  });

  it('keeps connection state across a proxy restart', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', initial());
    const first = await slidingSync(proxy, alice.token, REQ);
    await pushSync(fake, alice, syncResponse({ join: { '!a:fake': { timeline: [message('before restart')] } } }));
    const second = await slidingSync(proxy, alice.token, REQ, { pos: first.body.pos, timeout: 0 });
    assert.deepEqual(bodies(second.body.rooms['!a:fake']?.timeline), ['before restart']);
    await proxy.stop();
    const seen = fake.requests.length;
    const next = await startTestProxy(t, { SYNCV3_SERVER: fake.url }, { db: proxy.db, poller: FAST_POLLER });
    // Queue only once the new poller polls: the old one's aborted long-poll must not take it.
    await waitUntil(() => fake.requests.slice(seen).some((r) => r.token === alice.token && r.path.endsWith('/sync')));

    const resumed = await slidingSync(next, alice.token, REQ, { pos: second.body.pos, timeout: 0 });
    assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
    assert.deepEqual(Object.keys(resumed.body.rooms), [], 'nothing is re-sent, as initial or otherwise');
    await pushSync(fake, alice, syncResponse({ join: { '!b:fake': { timeline: [message('after restart')] } } }));
    const live = await slidingSync(next, alice.token, REQ, { pos: resumed.body.pos, timeout: 0 });
    assert.deepEqual(Object.keys(live.body.rooms), ['!b:fake']);
    assert.equal(live.body.rooms['!b:fake']?.initial, undefined);
    assert.deepEqual(bodies(live.body.rooms['!b:fake']?.timeline), ['after restart']);
    // A retry of the pos the client had before the restart also still works.
    const retry = await slidingSync(next, alice.token, REQ, { pos: resumed.body.pos, timeout: 0 });
    assert.equal(retry.status, 200);
  });

  it('records in a pending response only the required_state configs it adds, and keeps them all across a restart', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', initial());
    const configsPending = async () => Object.keys((JSON.parse((await stored(proxy))?.diff ?? '{}').ext?.configs ?? {}) as object);
    const first = await slidingSync(proxy, alice.token, REQ);
    assert.equal((await configsPending()).length, 1, "the first response adds its list's config");
    const second = await slidingSync(proxy, alice.token, REQ, { pos: first.body.pos, timeout: 0 });
    assert.deepEqual(await configsPending(), [], 'the same config again is not written again');
    const withTopic = { ...REQ, room_subscriptions: { '!a:fake': { timeline_limit: 1, required_state: [['m.room.topic', '']] } } };
    const third = await slidingSync(proxy, alice.token, withTopic, { pos: second.body.pos, timeout: 0 });
    assert.equal((await configsPending()).length, 1, 'only the merged config of the subscribed room is new');
    await proxy.stop();
    const next = await startTestProxy(t, { SYNCV3_SERVER: fake.url }, { db: proxy.db, poller: FAST_POLLER });
    const fourth = await slidingSync(next, alice.token, withTopic, { pos: third.body.pos, timeout: 0 });
    assert.equal(fourth.status, 200, JSON.stringify(fourth.body));
    // Each room's last config must still be known to tell that the list's config asks for no more
    // (a config missing would send the rooms' state again as expanded).
    const fifth = await slidingSync(next, alice.token, REQ, { pos: fourth.body.pos, timeout: 0 });
    assert.equal(fifth.status, 200, JSON.stringify(fifth.body));
    assert.deepEqual(fifth.body.rooms, {}, 'nothing to send: both configs were kept');
  });

  it('keeps SYNCV3_MAX_CONNECTIONS_PER_DEVICE connections per device, dropping the least recently used', async (t) => {
    const fake = await startFakeHomeserver({ maxWaitMs: 300 });
    t.after(() => fake.close());
    const proxy = await startTestProxy(t, { SYNCV3_SERVER: fake.url, SYNCV3_MAX_CONNECTIONS_PER_DEVICE: '3' }, { poller: FAST_POLLER });
    const alice = addUser(fake, ME, 'A', initial());
    // Element X's three connections fit.
    const pos: Record<string, string> = {};
    for (const connId of ['room-list', 'encryption', 'notifications']) {
      const res = await slidingSync(proxy, alice.token, { ...REQ, conn_id: connId });
      assert.equal(res.status, 200);
      pos[connId] = res.body.pos;
    }
    for (const connId of ['encryption', 'room-list', 'notifications']) {
      const res = await slidingSync(proxy, alice.token, { ...REQ, conn_id: connId }, { pos: pos[connId], timeout: 0 });
      assert.equal(res.status, 200, `${connId} survives`);
      pos[connId] = res.body.pos;
    }
    // encryption is now the least recently used: a fourth connection ends it.
    const fourth = await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'other' });
    assert.equal(fourth.status, 200);
    const { rows } = await proxy.pool.query('SELECT conn_id FROM connections ORDER BY conn_id');
    assert.deepEqual(
      rows.map((r) => r.conn_id),
      ['notifications', 'other', 'room-list'],
    );
    assertUnknownPos(
      await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'encryption' }, { pos: pos.encryption, timeout: 0 }),
      'the evicted connection',
    );
    for (const connId of ['room-list', 'notifications']) {
      const res = await slidingSync(proxy, alice.token, { ...REQ, conn_id: connId }, { pos: pos[connId], timeout: 0 });
      assert.equal(res.status, 200, `${connId} still works`);
    }
    assert.equal(await counter(proxy, 'sliding_sync_api_destroyed_conns'), 1);
  });

  it('expires idle connections in memory too: the returning client gets M_UNKNOWN_POS, not a 500', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', initial());
    const idle = await slidingSync(proxy, alice.token, REQ);
    const busy = await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'busy' });
    await proxy.pool.query(`UPDATE connections SET last_used_at = now() - interval '8 days' WHERE conn_id = ''`);
    await proxy.housekeep();
    assert.equal(await stored(proxy), undefined, 'the row is gone');
    assertUnknownPos(await slidingSync(proxy, alice.token, REQ, { pos: idle.body.pos, timeout: 0 }), 'the pending pos');
    const kept = await slidingSync(proxy, alice.token, { ...REQ, conn_id: 'busy' }, { pos: busy.body.pos, timeout: 0 });
    assert.equal(kept.status, 200, 'a connection in use stays');
    assert.equal(await counter(proxy, 'sliding_sync_api_expiry_conn_timed_out'), 1);
    assert.equal(await counter(proxy, 'sliding_sync_api_destroyed_conns'), 1);
    const fresh = await slidingSync(proxy, alice.token, REQ);
    assert.equal(fresh.status, 200, 'the client starts over');
    assert.equal(fresh.body.rooms['!a:fake']?.initial, true);
  });

  it('answers M_UNKNOWN_POS when another process deleted the connection under the in-memory copy', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', initial());
    const first = await slidingSync(proxy, alice.token, REQ);
    await proxy.pool.query('DELETE FROM connections');
    assertUnknownPos(await slidingSync(proxy, alice.token, REQ, { pos: first.body.pos, timeout: 0 }), 'the pending pos');
  });

  it('discards the pending response in the store when the confirmed pos is retried', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', initial());
    const p1 = await slidingSync(proxy, alice.token, REQ);
    const p2 = await slidingSync(proxy, alice.token, REQ, { pos: p1.body.pos, timeout: 0 });
    assert.equal((await stored(proxy))?.pending, p2.body.pos);
    // The client never got p2's response: it retries p1 with a long-poll, then gives up on it.
    const abort = new AbortController();
    const retry = slidingSync(proxy, alice.token, REQ, { pos: p1.body.pos, timeout: 10_000, signal: abort.signal }).catch(() => undefined);
    await waitUntil(async () => (await stored(proxy))?.pending === null, 3000);
    abort.abort();
    await retry;
    await proxy.stop();
    const next = await startTestProxy(t, { SYNCV3_SERVER: fake.url }, { db: proxy.db, poller: FAST_POLLER });
    assertUnknownPos(await slidingSync(next, alice.token, REQ, { pos: p2.body.pos, timeout: 0 }), "the discarded response's pos");
    const again = await slidingSync(next, alice.token, REQ, { pos: p1.body.pos, timeout: 0 });
    assert.equal(again.status, 200, 'the confirmed pos still works');
  });

  it('commits nothing for a client that disconnects mid long-poll', async (t) => {
    const { fake, proxy, parked } = await startStack(t);
    const alice = addUser(fake, ME, 'A', initial());
    const p1 = await slidingSync(proxy, alice.token, REQ);
    const abort = new AbortController();
    const isParked = parked();
    const waiting = slidingSync(proxy, alice.token, REQ, { pos: p1.body.pos, timeout: 10_000, signal: abort.signal }).catch(
      () => undefined,
    );
    // Confirming p1 is the request's first step; then it waits.
    await isParked;
    const before = await stored(proxy);
    assert.equal(before?.pending, null);
    abort.abort();
    await waiting;
    // News that would have ended the wait arrives after the client left.
    // Stored and announced once the poller asks from the next position: the bus delivers in publish.
    await pushSync(fake, alice, syncResponse({ join: { '!a:fake': { timeline: [message('after')] } } }));
    assert.deepEqual(await stored(proxy), before, 'no pending response was committed');
    const next = await slidingSync(proxy, alice.token, REQ, { pos: p1.body.pos, timeout: 0 });
    assert.equal(next.status, 200);
    assert.deepEqual(bodies(next.body.rooms['!a:fake']?.timeline), ['after'], 'the news comes with the next request');
  });
});
