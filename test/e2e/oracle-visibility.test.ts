// What a user who never joined, or is out of a room, may see: against real Synapse, with its
// native MSC4186 answer as the oracle (see oracle.ts). Bob's poller stores every room's whole
// history in the proxy, so these are the stories where the shared store could leak: an invite
// rejected, an invite revoked by a kick, a ban before ever joining, and (MSC3575, which Synapse
// does not serve) a rename after the user was kicked or left.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startE2eProxy } from '../support/e2e-proxy.js';
import { type Json, registerUser, requestJson } from '../support/matrix-users.js';
import { homeserverForFile } from '../support/synapse.js';
import { assertSameAsSynapse, settle } from './oracle.js';

const hs = await homeserverForFile();
const MSC3575_PATH = '/_matrix/client/unstable/org.matrix.msc3575/sync';

const bodiesOf = (room: Json): string[] => (room?.timeline ?? []).map((e: Json) => e.content?.body).filter(Boolean);
const namesOf = (room: Json): string[] => [
  ...(room?.name === undefined ? [] : [room.name]),
  ...(room?.required_state ?? []).filter((e: Json) => e.type === 'm.room.name').map((e: Json) => e.content.name),
];

test('history visibility: the proxy serves what Synapse serves', { skip: hs.skip, timeout: 180_000 }, async (t) => {
  const hsUrl = hs.url as string;
  const proxy = await startE2eProxy(t, hsUrl);
  const [alice, bob] = await Promise.all([registerUser(hsUrl, 'alice'), registerUser(hsUrl, 'bob')]);
  await Promise.all([settle(proxy.url, alice), settle(proxy.url, bob)]);
  const config = { timeline_limit: 20, required_state: [['*', '*']] };
  const body = (rooms: string[]) => ({
    lists: { all: { ranges: [[0, 19]], ...config } },
    room_subscriptions: Object.fromEntries(rooms.map((id) => [id, config])),
  });
  // A connection open before anything happens, to check what a continuing client is sent.
  const continuing = await alice.slidingSync(proxy.url, { conn_id: 'continuing', ...body([]) });

  // private_chat rooms: history visibility `shared`.
  const rejected = await bob.createRoom({ name: 'Rejected' });
  await bob.sendMessage(rejected, 'before rejected');
  await bob.invite(rejected, alice.userId);
  await bob.sendMessage(rejected, 'while invited to rejected');
  await alice.leave(rejected);
  await bob.sendMessage(rejected, 'after rejected');

  const revoked = await bob.createRoom({ name: 'Revoked' });
  await bob.sendMessage(revoked, 'before revoked');
  await bob.invite(revoked, alice.userId);
  await bob.sendMessage(revoked, 'while invited to revoked');
  await bob.kick(revoked, alice.userId, 'changed my mind');
  await bob.sendMessage(revoked, 'after revoked');

  const banned = await bob.createRoom({ name: 'Banned' });
  await bob.sendMessage(banned, 'before banned');
  await bob.ban(banned, alice.userId, 'pre-emptive');
  await bob.sendMessage(banned, 'after banned');

  const kicked = await bob.createRoom({ name: 'Kicked before rename', invite: [alice.userId] });
  await alice.join(kicked);
  await bob.sendMessage(kicked, 'while joined to kicked');
  await bob.kick(kicked, alice.userId);
  await bob.setState(kicked, 'm.room.name', '', { name: 'Renamed after kick' });
  await bob.sendMessage(kicked, 'after kicked');

  const left = await bob.createRoom({ name: 'Left before rename', invite: [alice.userId] });
  await alice.join(left);
  await bob.sendMessage(left, 'while joined to left');
  await alice.leave(left);
  await bob.setState(left, 'm.room.name', '', { name: 'Renamed after leave' });
  await bob.sendMessage(left, 'after left');

  await Promise.all([settle(proxy.url, alice), settle(proxy.url, bob)]);
  const rooms = [rejected, revoked, banned, kicked, left];
  const forbidden = (text: string) => /^(before|while invited|after)/.test(text);

  await t.test('MSC4186: a fresh connection gets what Synapse gives', async () => {
    const [ours, synapse] = await Promise.all([alice.slidingSync(proxy.url, body(rooms)), alice.slidingSync(hsUrl, body(rooms))]);
    assertSameAsSynapse(ours, synapse, 'fresh connection');
    for (const id of rooms) {
      const room = ours.rooms?.[id];
      assert.deepEqual(bodiesOf(room).filter(forbidden), [], `no history Alice never had (${id})`);
      assert.ok(!namesOf(room).some((n) => n.startsWith('Renamed')), 'no name set after she was out');
    }
    assert.deepEqual(bodiesOf(ours.rooms[kicked]), ['while joined to kicked']);
  });

  await t.test('MSC4186: a continuing connection gets none of it either', async () => {
    const next = await alice.slidingSync(proxy.url, { conn_id: 'continuing', ...body(rooms) }, { pos: continuing.pos });
    for (const id of rooms) {
      const room = next.rooms?.[id];
      assert.deepEqual(bodiesOf(room).filter(forbidden), [], `no history Alice never had (${id})`);
      assert.ok(!namesOf(room).some((n) => n.startsWith('Renamed')), 'no name set after she was out');
    }
  });

  await t.test('MSC3575: a fresh connection names rooms as they were when she was out', async () => {
    const res = await requestJson('POST', `${proxy.url}${MSC3575_PATH}`, {
      token: alice.accessToken,
      body: body(rooms),
      timeoutMs: 30_000,
    });
    for (const id of rooms) {
      const room = res.rooms?.[id];
      assert.deepEqual(bodiesOf(room).filter(forbidden), [], `no history Alice never had (${id})`);
      assert.ok(!namesOf(room).some((n) => n.startsWith('Renamed')), `no name set after she was out (${namesOf(room)})`);
    }
    assert.equal(res.rooms?.[kicked]?.name, 'Kicked before rename');
    assert.equal(res.rooms?.[left]?.name, 'Left before rename');
  });
});
