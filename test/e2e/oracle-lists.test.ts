// Lists against the oracle: one user with every kind of room (named group, DM, encrypted,
// space, pending invite, knock, kicked, banned, left, tagged), the same bodies sent to the proxy and to
// Synapse's native endpoint, answers compared after normalisation (see oracle.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startE2eProxy } from '../support/e2e-proxy.js';
import { ENCRYPTION_STATE, type Json, MatrixHttpError, registerUser } from '../support/matrix-users.js';
import { homeserverForFile } from '../support/synapse.js';
import { assertSameAsSynapse, listRoomIds, settle } from './oracle.js';

const hs = await homeserverForFile();

/** Join rule of a room one may only knock on (room versions 7 and later). */
const KNOCK_RULE = { type: 'm.room.join_rules', state_key: '', content: { join_rule: 'knock' } };

/** What Element X asks of its room list, trimmed to what these rooms have. */
const REQUIRED_STATE = [
  ['m.room.name', ''],
  ['m.room.encryption', ''],
  ['m.room.create', ''],
  ['m.room.topic', ''],
  ['m.room.member', '$ME'],
  ['m.room.member', '$LAZY'],
  ['m.space.child', '*'],
];

test('lists: the proxy answers as Synapse does', { skip: hs.skip, timeout: 180_000 }, async (t) => {
  const hsUrl = hs.url as string;
  const proxy = await startE2eProxy(t, hsUrl);
  const [alice, bob] = await Promise.all([registerUser(hsUrl, 'alice'), registerUser(hsUrl, 'bob')]);
  // Both are proxy users from the start, so every room below reaches the proxy live (the proxy
  // keeps full timelines only for what its pollers saw after a device's first request).
  await Promise.all([settle(proxy.url, alice), settle(proxy.url, bob)]);

  const group = await alice.createRoom({ name: 'Group chat', invite: [bob.userId] });
  await bob.join(group);
  await bob.sendEvent(group, 'm.room.message', { msgtype: 'm.text', body: 'hi alice', 'm.mentions': { user_ids: [alice.userId] } });
  const dm = await alice.createRoom({ is_direct: true, invite: [bob.userId], preset: 'trusted_private_chat' });
  await bob.join(dm);
  // Synapse never writes m.direct itself: clients do.
  await alice.setAccountData('m.direct', { [bob.userId]: [dm] });
  const encrypted = await alice.createRoom({ name: 'Secrets', topic: 'hush', initial_state: [ENCRYPTION_STATE] });
  const space = await alice.createRoom({ name: 'Our space', creation_content: { type: 'm.space' } });
  await alice.setState(space, 'm.space.child', group, { via: ['localhost'] });
  const invite = await bob.createRoom({
    name: 'Invitation',
    initial_state: [{ type: 'm.room.avatar', state_key: '', content: { url: 'mxc://localhost/invitation' } }],
  });
  await bob.invite(invite, alice.userId);
  const knock = await bob.createRoom({ name: 'Knock knock', initial_state: [KNOCK_RULE] });
  await alice.knock(knock, 'let me in');
  const kicked = await bob.createRoom({ name: 'Kicked from', invite: [alice.userId] });
  await alice.join(kicked);
  await bob.kick(kicked, alice.userId, 'out');
  const banned = await bob.createRoom({ name: 'Banned from', invite: [alice.userId] });
  await alice.join(banned);
  await bob.ban(banned, alice.userId, 'gone');
  const left = await bob.createRoom({ name: 'Left behind', invite: [alice.userId] });
  await alice.join(left);
  await alice.leave(left);
  // Created last, so the settle below can find listed rooms still changing.
  const favourite = await alice.createRoom({ name: 'Favourite things' });
  await alice.setTag(favourite, 'm.favourite', 0.5);
  await settle(proxy.url, alice);
  const names = new Map([
    [group, 'group'],
    [dm, 'dm'],
    [encrypted, 'encrypted'],
    [space, 'space'],
    [invite, 'invite'],
    [knock, 'knock'],
    [kicked, 'kicked'],
    [banned, 'banned'],
    [favourite, 'favourite'],
  ]);
  const both = (body: unknown, opts: { pos?: [string, string] } = {}) =>
    Promise.all([alice.slidingSync(proxy.url, body, { pos: opts.pos?.[0] }), alice.slidingSync(hsUrl, body, { pos: opts.pos?.[1] })]);

  await t.test('the initial list with every kind of room', async () => {
    // timeline_limit 1: kicked and banned rooms end at the membership change on both sides;
    // with more, Synapse re-applies history visibility as of now, the proxy serves what the
    // user saw while joined.
    const body = { lists: { all: { ranges: [[0, 19]], timeline_limit: 1, required_state: REQUIRED_STATE } } };
    const [ours, synapse] = await both(body);
    assertSameAsSynapse(ours, synapse, 'initial list');
    // The comparison alone would pass if both were wrong in the same way: pin the essentials.
    assert.equal(ours.lists.all.count, names.size, 'a room left by the user is not listed; kicked and banned ones are');
    assert.deepEqual(new Set(Object.keys(ours.rooms)), new Set(names.keys()));
    assert.equal(ours.rooms[left], undefined);
    assert.equal(ours.rooms[group].name, 'Group chat');
    assert.equal(ours.rooms[dm].is_dm, true);
    assert.ok(ours.rooms[invite].invite_state.some((e: Json) => e.type === 'm.room.name' && e.content.name === 'Invitation'));
    assert.deepEqual([ours.rooms[invite].name, ours.rooms[invite].avatar], ['Invitation', 'mxc://localhost/invitation']);
    assert.equal(ours.rooms[knock].name, 'Knock knock');
    const knockState = ours.rooms[knock].invite_state as Json[];
    assert.ok(knockState.some((e) => e.type === 'm.room.join_rules' && e.content.join_rule === 'knock'));
    assert.ok(knockState.some((e) => e.type === 'm.room.member' && e.state_key === alice.userId && e.content.membership === 'knock'));
    assert.equal(ours.rooms[knock].timeline, undefined, 'nothing of a knocked room but its stripped state');
    assert.equal(ours.rooms[kicked].timeline.at(-1).content.membership, 'leave');
    assert.equal(ours.rooms[banned].timeline.at(-1).content.membership, 'ban');
    assert.ok(ours.rooms[encrypted].required_state.some((e: Json) => e.type === 'm.room.encryption'));
    for (const room of Object.values<Json>(ours.rooms)) assert.equal(room.initial, true);
  });

  await t.test("a user's first request: rooms from before the proxy knew the user, timeline_limit 1", async () => {
    // The proxy's first v2 sync for a device asks for one event per room; deeper timelines of
    // rooms older than the user's first request are fetched on demand (oracle-history.test.ts
    // compares those). Here the first window as Element X asks for it.
    const carol = await registerUser(hsUrl, 'carol');
    const older = await carol.createRoom({ name: 'Older', topic: 'from before', invite: [bob.userId] });
    await bob.join(older);
    await bob.sendMessage(older, 'old news');
    const oldest = await carol.createRoom({ name: 'Oldest', initial_state: [ENCRYPTION_STATE] });
    await carol.sendEvent(oldest, 'm.room.encrypted', {
      algorithm: 'm.megolm.v1.aes-sha2',
      ciphertext: 'AAAA',
      session_id: 'S',
      sender_key: 'K',
      device_id: carol.deviceId,
    });
    const body = { lists: { all: { ranges: [[0, 19]], timeline_limit: 1, required_state: REQUIRED_STATE } } };
    const [ours, synapse] = await Promise.all([carol.slidingSync(proxy.url, body), carol.slidingSync(hsUrl, body)]);
    assertSameAsSynapse(ours, synapse, 'first request');
    assert.deepEqual(new Set(Object.keys(ours.rooms)), new Set([older, oldest]));
    assert.equal(ours.rooms[older].timeline[0].content.body, 'old news');
    assert.equal(ours.rooms[oldest].timeline[0].type, 'm.room.encrypted');
    assert.equal(ours.rooms[older].limited, true);
  });

  await t.test('unread counts are the homeserver v2 counts (Synapse sliding sync always sends 0)', async () => {
    const body = { lists: { all: { ranges: [[0, 19]], timeline_limit: 0, required_state: [] } } };
    const [ours] = await both(body);
    // Bob's message mentions alice: one notification, one highlight.
    assert.deepEqual([ours.rooms[group].notification_count, ours.rooms[group].highlight_count], [1, 1]);
    for (const id of [dm, encrypted, space, favourite]) {
      assert.deepEqual([ours.rooms[id].notification_count, ours.rooms[id].highlight_count], [0, 0], names.get(id));
    }
  });

  await t.test('filters: room_types, not_room_types, is_dm, is_encrypted, is_invite, tags, not_tags', async () => {
    const list = (filters: Json) => ({ ranges: [[0, 19]], timeline_limit: 1, required_state: [['m.room.name', '']], filters });
    const body = {
      lists: {
        spaces: list({ room_types: ['m.space'] }),
        rooms: list({ not_room_types: ['m.space'] }),
        untyped: list({ room_types: [null] }),
        dms: list({ is_dm: true }),
        not_dms: list({ is_dm: false, is_invite: false }),
        encrypted: list({ is_encrypted: true }),
        invites: list({ is_invite: true }),
        favourites: list({ tags: ['m.favourite'] }),
        others: list({ not_tags: ['m.favourite'] }),
      },
    };
    const [ours, synapse] = await both(body);
    assertSameAsSynapse(ours, synapse, 'filtered lists');
    const set = (name: string) => new Set(listRoomIds(ours, name));
    assert.deepEqual(set('spaces'), new Set([space]));
    assert.equal(set('rooms').has(space), false);
    assert.deepEqual(set('untyped'), set('rooms'));
    assert.deepEqual(set('dms'), new Set([dm]));
    assert.deepEqual(set('encrypted'), new Set([encrypted]));
    assert.deepEqual(set('invites'), new Set([invite]));
    assert.deepEqual(set('favourites'), new Set([favourite]));
    assert.equal(set('others').has(favourite), false);
    assert.equal(set('not_dms').has(dm) || set('not_dms').has(invite), false);
  });

  await t.test('spaces and room_name_like filters (Synapse: HTTP 500, not implemented)', async () => {
    const list = (filters: Json) => ({ ranges: [[0, 19]], timeline_limit: 0, required_state: [], filters });
    const body = { lists: { in_space: list({ spaces: [space] }), named: list({ room_name_like: 'FAVOUR' }) } };
    const ours = await alice.slidingSync(proxy.url, body);
    assert.deepEqual(listRoomIds(ours, 'in_space'), [group], 'the direct children of a joined space');
    assert.deepEqual(listRoomIds(ours, 'named'), [favourite], 'case-insensitive substring of the name');
    const synapse = await alice.slidingSync(hsUrl, body).catch((err: unknown) => err);
    if (synapse instanceof MatrixHttpError) {
      assert.equal(synapse.status, 500, 'the known Synapse failure, not some other refusal');
    } else {
      // A Synapse that implements them must agree with us.
      assertSameAsSynapse(ours, synapse, 'spaces and room_name_like');
    }
  });

  await t.test('a growing window: ranges [0,1], then [0,4] on the same connection', async () => {
    const body = (end: number) => ({ lists: { all: { ranges: [[0, end]], timeline_limit: 1, required_state: REQUIRED_STATE } } });
    const [ours1, synapse1] = await both(body(1));
    assertSameAsSynapse(ours1, synapse1, 'window [0,1]');
    assert.equal(Object.keys(ours1.rooms).length, 2);
    const [ours2, synapse2] = await both(body(4), { pos: [ours1.pos, synapse1.pos] });
    assertSameAsSynapse(ours2, synapse2, 'window [0,4] after [0,1]');
    // Only the rooms new to the window come (and from scratch); the first two are unchanged.
    const window = listRoomIds(ours2, 'all');
    assert.equal(window.length, 5);
    assert.deepEqual(window.slice(0, 2), listRoomIds(ours1, 'all'));
    assert.deepEqual(new Set(Object.keys(ours2.rooms)), new Set(window.slice(2)));
    for (const id of window.slice(2)) assert.equal(ours2.rooms[id].initial, true);
  });

  await t.test('room extensions on a list with several ranges (Synapse: HTTP 500, asserts one range)', async () => {
    const order = listRoomIds(
      await alice.slidingSync(proxy.url, { lists: { all: { ranges: [[0, 19]], timeline_limit: 0, required_state: [] } } }),
      'all',
    );
    // Room account data reaches the proxy only for joined rooms (v2 /sync has no account data
    // for rooms left or kicked from): tag two joined rooms, one between the two ranges below and
    // one inside the second. Account data does not reorder rooms.
    const joined = new Set([group, dm, encrypted, space, favourite]);
    const outsideAt = order.findIndex((id, i) => i > 0 && joined.has(id));
    const insideAt = order.findIndex((id, i) => i > outsideAt && joined.has(id));
    const [outside, inside] = [order[outsideAt], order[insideAt]] as [string, string];
    await alice.setTag(outside, 'm.lowpriority');
    await alice.setTag(inside, 'm.lowpriority');
    await settle(proxy.url, alice);
    const extensions = { account_data: { enabled: true }, receipts: { enabled: true }, typing: { enabled: true } };
    const ranges = [
      [0, outsideAt - 1],
      [insideAt, insideAt],
    ];
    const body = { lists: { all: { ranges, timeline_limit: 1, required_state: [] } }, extensions };
    const ours = await alice.slidingSync(proxy.url, body);
    const window = new Set(ours.lists.all.ops.flatMap((op: Json) => op.room_ids));
    assert.deepEqual(window, new Set([...order.slice(0, outsideAt), inside]));
    const withAccountData = Object.keys(ours.extensions.account_data.rooms);
    for (const id of withAccountData) assert.ok(window.has(id), `${names.get(id)} is outside both ranges`);
    const tags = (id: string) => ours.extensions.account_data.rooms[id]?.find((e: Json) => e.type === 'm.tag')?.content.tags;
    assert.deepEqual(Object.keys(tags(inside) ?? {}), ['m.lowpriority']);
    assert.equal(tags(outside), undefined);
    const synapse = await alice.slidingSync(hsUrl, body).catch((err: unknown) => err);
    if (synapse instanceof MatrixHttpError) assert.equal(synapse.status, 500, 'the known Synapse failure');
    else assert.deepEqual(ours.extensions.account_data.rooms, synapse.extensions.account_data.rooms);
  });
});
