// MSC4186 device extensions through the whole proxy: to_device (MSC3885: order, limit,
// acknowledgement by `since`, per device, across restarts) and e2ee (MSC3884: key counts on
// every response, device list changes on incremental ones).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { startTestProxy } from '../support/proxy.js';
import {
  addUser,
  FAST_POLLER,
  pushSync,
  queueLater,
  type SsResult,
  slidingSync,
  startStack,
  waitUntil,
} from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const BOB = '@bob:fake';
const toDevice = (tag: string, n: number) =>
  Array.from({ length: n }, (_, i) => ({ type: 'org.example.msg', sender: BOB, content: { tag, n: i + 1 } }));
const td = (limit?: number, since?: string) => ({ extensions: { to_device: { enabled: true, limit, since } } });
const got = (res: SsResult) => (res.body.extensions.to_device?.events ?? []).map((e) => `${e.content.tag}${e.content.n}`);
const oneRoom = { join: { '!a:fake': { state: createRoomState('!a:fake', ME), timeline: [message('hi')] } } };

describe('MSC4186 to_device', () => {
  it('delivers oldest first up to the limit; since acknowledges, and a retried since gets the same', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', syncResponse({ toDevice: toDevice('m', 5) }));
    const r1 = await slidingSync(proxy, alice.token, { conn_id: 'e', ...td(2) });
    assert.equal(r1.status, 200);
    assert.deepEqual(got(r1), ['m1', 'm2']);
    const nb1 = r1.body.extensions.to_device?.next_batch;
    assert.equal(typeof nb1, 'string');
    assert.equal(r1.body.extensions.to_device?.events?.[0]?.sender, BOB);
    assert.equal(r1.body.extensions.to_device?.events?.[0]?.type, 'org.example.msg');

    const r2 = await slidingSync(proxy, alice.token, { conn_id: 'e', ...td(2, nb1) }, { pos: r1.body.pos, timeout: 0 });
    assert.deepEqual(got(r2), ['m3', 'm4']);
    const retried = await slidingSync(proxy, alice.token, { conn_id: 'e', ...td(2, nb1) }, { pos: r1.body.pos, timeout: 0 });
    assert.deepEqual(got(retried), ['m3', 'm4'], 'a lost response is delivered again');
    const nb2 = retried.body.extensions.to_device?.next_batch;
    assert.equal(typeof nb2, 'string');
    const r3 = await slidingSync(proxy, alice.token, { conn_id: 'e', ...td(10, nb2) }, { pos: retried.body.pos, timeout: 0 });
    assert.deepEqual(got(r3), ['m5']);
    const nb3 = r3.body.extensions.to_device?.next_batch;
    const r4 = await slidingSync(proxy, alice.token, { conn_id: 'e', ...td(10, nb3) }, { pos: r3.body.pos, timeout: 0 });
    assert.deepEqual(got(r4), []);
    assert.equal(typeof r4.body.extensions.to_device?.next_batch, 'string');
    // Everything up to nb3 was acknowledged and is gone for good.
    const fresh = await slidingSync(proxy, alice.token, { conn_id: 'other', ...td(10) });
    assert.deepEqual(got(fresh), []);
  });

  it('caps the limit at 100 messages per response', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', syncResponse({ toDevice: toDevice('c', 150) }));
    const first = await slidingSync(proxy, alice.token, { conn_id: 'e', ...td(500) });
    assert.equal(first.status, 200);
    const names = got(first);
    assert.equal(names.length, 100, 'limit 500 is capped at 100');
    assert.deepEqual([names[0], names[99]], ['c1', 'c100']);
    const nb = first.body.extensions.to_device?.next_batch;
    const rest = await slidingSync(proxy, alice.token, { conn_id: 'e', ...td(500, nb) }, { pos: first.body.pos, timeout: 0 });
    assert.deepEqual(
      got(rest),
      Array.from({ length: 50 }, (_, i) => `c${i + 101}`),
    );
  });

  it('never delivers to another device, and only the connection that asks consumes', async (t) => {
    const { fake, proxy } = await startStack(t);
    const a = addUser(fake, ME, 'A', syncResponse({ ...oneRoom, toDevice: toDevice('a', 2) }));
    const a2 = addUser(fake, ME, 'A2', syncResponse({ ...oneRoom, toDevice: toDevice('z', 1) }));
    const bob = addUser(fake, BOB, 'B', syncResponse({ ...oneRoom, toDevice: toDevice('b', 1) }));
    const rooms = { conn_id: 'rooms', lists: { all: { ranges: [[0, 9]], timeline_limit: 1, required_state: [] } } };
    let res = await slidingSync(proxy, a.token, rooms);
    for (let i = 0; i < 3; i++) {
      assert.equal(res.body.extensions.to_device, undefined, 'a connection that does not ask gets none');
      res = await slidingSync(proxy, a.token, rooms, { pos: res.body.pos, timeout: 0 });
    }
    assert.deepEqual(got(await slidingSync(proxy, a2.token, td())), ['z1']);
    assert.deepEqual(got(await slidingSync(proxy, bob.token, td())), ['b1']);
    const mine = await slidingSync(proxy, a.token, { conn_id: 'encryption', ...td() });
    assert.deepEqual(got(mine), ['a1', 'a2'], 'still all there for the connection that asks');
  });

  it('keeps unacknowledged messages across a proxy restart', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', syncResponse({ toDevice: toDevice('k', 2) }));
    const before = await slidingSync(proxy, alice.token, { conn_id: 'e', ...td() });
    assert.deepEqual(got(before), ['k1', 'k2']);
    await fake.waitForSync(alice.token, '1');
    await proxy.stop();
    const seen = fake.requests.length;
    const next = await startTestProxy(t, { SYNCV3_SERVER: fake.url }, { db: proxy.db, poller: FAST_POLLER });
    await waitUntil(() => fake.requests.slice(seen).some((r) => r.token === alice.token && r.path.endsWith('/sync')));
    const again = await slidingSync(next, alice.token, { conn_id: 'e', ...td() }, { pos: before.body.pos, timeout: 0 });
    assert.equal(again.status, 200);
    assert.deepEqual(got(again), ['k1', 'k2'], 'not lost by the restart');
    const acked = await slidingSync(next, alice.token, { conn_id: 'e', ...td(100, before.body.extensions.to_device?.next_batch) });
    assert.deepEqual(got(acked), []);
  });

  it('ends a long-poll when a to-device message arrives', async (t) => {
    const { fake, proxy, parked } = await startStack(t);
    const alice = addUser(fake, ME, 'A', syncResponse(oneRoom));
    const first = await slidingSync(proxy, alice.token, { conn_id: 'e', ...td() });
    const waiting = parked();
    const poll = slidingSync(proxy, alice.token, { conn_id: 'e', ...td() }, { pos: first.body.pos, timeout: 10_000 });
    await waiting;
    await queueLater(fake, alice, syncResponse({ toDevice: toDevice('w', 1) }));
    const res = await poll;
    assert.deepEqual(got(res), ['w1']);
    assert.ok(res.ms < 5000, `returned early (${res.ms} ms)`);
  });
});

describe('MSC4186 e2ee', () => {
  it('always sends key counts, and device list changes on incremental responses', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({ ...oneRoom, otkCounts: { signed_curve25519: 50 }, fallbackKeyTypes: ['signed_curve25519'] }),
    );
    const req = { extensions: { e2ee: { enabled: true } } };
    const first = await slidingSync(proxy, alice.token, req);
    const e1 = first.body.extensions.e2ee;
    assert.deepEqual(e1?.device_one_time_keys_count, { signed_curve25519: 50 });
    assert.deepEqual(e1?.device_unused_fallback_key_types, ['signed_curve25519']);
    assert.equal(e1?.device_lists, undefined, 'no device lists on an initial sync');

    const quiet = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    assert.deepEqual(quiet.body.extensions.e2ee?.device_one_time_keys_count, { signed_curve25519: 50 }, 'always present');
    assert.deepEqual(quiet.body.extensions.e2ee?.device_unused_fallback_key_types, ['signed_curve25519']);
    assert.deepEqual(quiet.body.extensions.e2ee?.device_lists, { changed: [], left: [] });

    await pushSync(
      fake,
      alice,
      syncResponse({ deviceLists: { changed: [BOB], left: ['@carol:fake'] }, otkCounts: { signed_curve25519: 49 }, fallbackKeyTypes: [] }),
    );
    const changed = await slidingSync(proxy, alice.token, req, { pos: quiet.body.pos, timeout: 0 });
    const e2 = changed.body.extensions.e2ee;
    assert.deepEqual(e2?.device_lists, { changed: [BOB], left: ['@carol:fake'] });
    assert.deepEqual(e2?.device_one_time_keys_count, { signed_curve25519: 49 });
    assert.deepEqual(e2?.device_unused_fallback_key_types, [], 'the fallback key was used');
    const retried = await slidingSync(proxy, alice.token, req, { pos: quiet.body.pos, timeout: 0 });
    assert.deepEqual(retried.body.extensions.e2ee?.device_lists, { changed: [BOB], left: ['@carol:fake'] }, 'a lost response is resent');
    const after = await slidingSync(proxy, alice.token, req, { pos: retried.body.pos, timeout: 0 });
    assert.deepEqual(after.body.extensions.e2ee?.device_lists, { changed: [], left: [] }, 'each change is sent once');
  });

  it('keeps device list changes ingested before a proxy restart for the next response', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', syncResponse(oneRoom));
    const req = { conn_id: 'e', extensions: { e2ee: { enabled: true } } };
    const before = await slidingSync(proxy, alice.token, req);
    assert.equal(before.status, 200);
    await pushSync(fake, alice, syncResponse({ deviceLists: { changed: [BOB], left: ['@carol:fake'] } }));
    await proxy.stop();
    const seen = fake.requests.length;
    const next = await startTestProxy(t, { SYNCV3_SERVER: fake.url }, { db: proxy.db, poller: FAST_POLLER });
    await waitUntil(() => fake.requests.slice(seen).some((r) => r.token === alice.token && r.path.endsWith('/sync')));
    const after = await slidingSync(next, alice.token, req, { pos: before.body.pos, timeout: 0 });
    assert.equal(after.status, 200);
    assert.deepEqual(after.body.extensions.e2ee?.device_lists, { changed: [BOB], left: ['@carol:fake'] }, 'not lost by the restart');
    const once = await slidingSync(next, alice.token, req, { pos: after.body.pos, timeout: 0 });
    assert.deepEqual(once.body.extensions.e2ee?.device_lists, { changed: [], left: [] });
  });

  it('reports zero keys for a device the homeserver gave no counts', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', syncResponse(oneRoom));
    const res = await slidingSync(proxy, alice.token, { extensions: { e2ee: { enabled: true } } });
    assert.deepEqual(res.body.extensions.e2ee?.device_one_time_keys_count, { signed_curve25519: 0 });
    assert.deepEqual(res.body.extensions.e2ee?.device_unused_fallback_key_types, []);
  });

  it('ends a long-poll when device lists change', async (t) => {
    const { fake, proxy, parked } = await startStack(t);
    const alice = addUser(fake, ME, 'A', syncResponse(oneRoom));
    const req = { lists: { all: { ranges: [[0, 9]], timeline_limit: 1, required_state: [] } }, extensions: { e2ee: { enabled: true } } };
    const first = await slidingSync(proxy, alice.token, req);
    const waiting = parked();
    const poll = slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 10_000 });
    await waiting;
    await queueLater(fake, alice, syncResponse({ deviceLists: { changed: [BOB] } }));
    const res = await poll;
    assert.deepEqual(res.body.extensions.e2ee?.device_lists?.changed, [BOB]);
    assert.deepEqual(res.body.rooms, {});
    assert.ok(res.ms < 5000, `returned early (${res.ms} ms)`);
  });
});
