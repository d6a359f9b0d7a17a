// History from before the first contact, against real Synapse with its native MSC4186 answer as
// the oracle (see oracle.ts): rooms, messages, renames, members, a kick and a late join under
// `joined` visibility all happen first; then Alice logs in on a new device whose first request
// goes through the proxy, and opens the rooms with timeline_limit 1, 3, 5 and 20 and $LAZY
// members. The proxy holds one event per room after that first poll and fetches the rest.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startE2eProxy } from '../support/e2e-proxy.js';
import { type Json, registerUser } from '../support/matrix-users.js';
import { homeserverForFile } from '../support/synapse.js';
import { assertSameAsSynapse, settle } from './oracle.js';

const hs = await homeserverForFile();

test('history before the first contact: the proxy serves what Synapse serves', { skip: hs.skip, timeout: 240_000 }, async (t) => {
  const hsUrl = hs.url as string;
  const [alice, bob, carol] = await Promise.all([registerUser(hsUrl, 'alice'), registerUser(hsUrl, 'bob'), registerUser(hsUrl, 'carol')]);

  // A long conversation with a rename and members coming and going.
  const long = await bob.createRoom({ name: 'Long', invite: [alice.userId, carol.userId] });
  await Promise.all([alice.join(long), carol.join(long)]);
  for (let i = 1; i <= 12; i++) await [alice, bob, carol][i % 3]?.sendMessage(long, `long ${i}`);
  await bob.setState(long, 'm.room.name', '', { name: 'Long renamed' });
  await bob.kick(long, carol.userId, 'quiet please');
  for (let i = 13; i <= 24; i++) await [alice, bob][i % 2]?.sendMessage(long, `long ${i}`);

  // A short room: its whole history fits in 20 events.
  const short = await bob.createRoom({ name: 'Short', invite: [alice.userId] });
  await alice.join(short);
  await bob.sendMessage(short, 'short 1');

  // Alice joins late where only members see what is said.
  const late = await bob.createRoom({
    name: 'Late',
    initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'joined' } }],
  });
  for (let i = 1; i <= 6; i++) await bob.sendMessage(late, `before alice ${i}`);
  await bob.invite(late, alice.userId);
  await alice.join(late);
  for (let i = 1; i <= 4; i++) await bob.sendMessage(late, `after alice ${i}`);

  // First contact: a new device, logged in after all of it.
  const phone = await alice.login('new phone');
  const proxy = await startE2eProxy(t, hsUrl);
  await settle(proxy.url, phone);
  const rooms = [long, short, late];

  for (const limit of [1, 3, 5, 20]) {
    await t.test(`timeline_limit ${limit} with $LAZY members`, async () => {
      const config = {
        timeline_limit: limit,
        required_state: [
          ['m.room.name', ''],
          ['m.room.member', '$LAZY'],
        ],
      };
      const body = { conn_id: `open-${limit}`, room_subscriptions: Object.fromEntries(rooms.map((id) => [id, config])) };
      const [ours, synapse] = await Promise.all([phone.slidingSync(proxy.url, body), phone.slidingSync(hsUrl, body)]);
      assertSameAsSynapse(ours, synapse, `timeline_limit ${limit}`);
      for (const id of rooms) assert.equal(ours.rooms[id]?.timeline?.length, synapse.rooms[id]?.timeline?.length);
      const bodies = (ours.rooms[late]?.timeline ?? []).map((e: Json) => e.content?.body).filter(Boolean);
      assert.ok(!bodies.some((b: string) => b.startsWith('before alice')), 'nothing from before her join');
    });
  }

  await t.test('a room list asking one event per room agrees too', async () => {
    const body = { conn_id: 'list', lists: { all: { ranges: [[0, 9]], timeline_limit: 1, required_state: [] } } };
    const [ours, synapse] = await Promise.all([phone.slidingSync(proxy.url, body), phone.slidingSync(hsUrl, body)]);
    assertSameAsSynapse(ours, synapse, 'room list');
  });
});
