// MSC4186 connections and `pos` through the whole proxy: retries of the latest pos, stale and
// foreign positions, restarts of a connection, independent conn_ids, and connection state that
// outlives a proxy restart.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { startTestProxy } from '../support/proxy.js';
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
});
