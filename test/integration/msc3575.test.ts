// MSC3575 (the Go proxy's protocol) through the whole proxy: sticky lists and extensions, sort
// orders, DELETE/INSERT/INVALIDATE ops applied to a client-side list model, calculated names,
// avatars, heroes on request, old rooms, and the error cases.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ListOp } from '../../src/sync/types.js';
import { createRoomState, event, member, message, stateEvent, syncResponse } from '../support/builders.js';
import { applyOps, createListModel, highestIndex, modelRoomAt } from '../support/list-model.js';
import { addUser, pushSync, type SsBody, type SsRoom, slidingSync, startStack } from '../support/sliding-sync-client.js';

const PATH = '/_matrix/client/unstable/org.matrix.msc3575/sync';
const ME = '@alice:fake';
const BOB = '@bob:fake';
const CAROL = '@carol:fake';

type Body3575 = SsBody & { txn_id?: string; lists: Record<string, { count: number; ops?: ListOp[] }> };
type Room3575 = SsRoom & { timestamp?: number; avatar?: string | null };

async function sync3575(proxy: { url: string }, token: string, body: unknown, opts: { pos?: string; timeout?: number } = {}) {
  const res = await slidingSync(proxy, token, body, { timeout: 0, ...opts, path: PATH });
  return { ...res, body: res.body as Body3575 };
}

/** Rooms !a..!d named "Delta", "alpha", "Charlie", "bravo"; !d the most recent. */
function fourRooms() {
  const names: [string, string][] = [
    ['!a:fake', 'Delta'],
    ['!b:fake', 'alpha'],
    ['!c:fake', 'Charlie'],
    ['!d:fake', 'bravo'],
  ];
  return syncResponse({
    join: Object.fromEntries(
      names.map(([id, name]) => [id, { state: createRoomState(id, ME, { name }), timeline: [message(`hello ${name}`)] }]),
    ) as never,
  });
}

/** A client-side copy of one list, updated with each response's ops as matrix-js-sdk 37 does. */
function clientList(ranges: [number, number][]) {
  const model = createListModel();
  return {
    /** The rooms the client shows after the response, in index order. */
    apply(body: Body3575, list: string) {
      applyOps(model, ranges, body.lists[list]?.ops ?? []);
      const ids: string[] = [];
      for (let i = 0; i <= highestIndex(model); i++) {
        const id = modelRoomAt(model, i);
        if (id) ids.push(id);
      }
      return ids;
    },
    setRanges(next: [number, number][]) {
      ranges = next;
    },
  };
}

describe('MSC3575', () => {
  it('sorts by name and by recency, keeps list parameters sticky, and moves rooms with DELETE/INSERT', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', fourRooms());
    const byName = clientList([[0, 9]]);
    const byRecency = clientList([[0, 2]]);
    const first = await sync3575(proxy, alice.token, {
      txn_id: 'one',
      lists: {
        names: { ranges: [[0, 9]], sort: ['by_name'], timeline_limit: 1, required_state: [['m.room.name', '']] },
        recent: { ranges: [[0, 2]], sort: ['by_recency'], timeline_limit: 1 },
      },
    });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(first.body.txn_id, 'one');
    assert.deepEqual(byName.apply(first.body, 'names'), ['!b:fake', '!d:fake', '!c:fake', '!a:fake'], 'alpha, bravo, Charlie, Delta');
    assert.deepEqual(byRecency.apply(first.body, 'recent'), ['!d:fake', '!c:fake', '!b:fake']);
    assert.equal(first.body.lists.recent?.count, 4);
    const d = first.body.rooms['!d:fake'] as Room3575;
    assert.equal(d.initial, true);
    assert.equal(d.name, 'bravo');
    assert.equal(d.notification_count, 0);
    assert.equal(typeof d.timestamp, 'number');

    // A message in !a moves it to the top of the recency list, from outside the window.
    await pushSync(fake, alice, syncResponse({ join: { '!a:fake': { timeline: [message('news')] } } }));
    // Only ranges: sort, timeline_limit and required_state stay as they were.
    const second = await sync3575(
      proxy,
      alice.token,
      { lists: { names: { ranges: [[0, 9]] }, recent: { ranges: [[0, 2]] } } },
      { pos: first.body.pos },
    );
    assert.equal(second.status, 200, JSON.stringify(second.body));
    assert.deepEqual(second.body.lists.recent?.ops, [
      { op: 'DELETE', index: 2 },
      { op: 'INSERT', index: 0, room_id: '!a:fake' },
    ]);
    assert.deepEqual(byRecency.apply(second.body, 'recent'), ['!a:fake', '!d:fake', '!c:fake']);
    assert.deepEqual(second.body.lists.names?.ops ?? [], [], 'a message does not move a room by name');
    // The client already holds !a through the by-name list, so this is the delta, not a resend.
    const a = second.body.rooms['!a:fake'] as Room3575;
    assert.equal(a.initial, undefined);
    assert.deepEqual(
      a.timeline?.map((e) => e.content.body),
      ['news'],
    );

    // A rename moves a room in the by-name list.
    await pushSync(fake, alice, syncResponse({ join: { '!c:fake': { timeline: [stateEvent('m.room.name', '', { name: 'aardvark' })] } } }));
    const third = await sync3575(proxy, alice.token, { lists: { names: { ranges: [[0, 9]] } } }, { pos: second.body.pos });
    assert.deepEqual(byName.apply(third.body, 'names'), ['!c:fake', '!b:fake', '!d:fake', '!a:fake']);
    assert.equal((third.body.rooms['!c:fake'] as Room3575).name, 'aardvark');
    assert.deepEqual(byRecency.apply(third.body, 'recent'), ['!c:fake', '!a:fake', '!d:fake'], 'the recency list is sticky too');
  });

  it('invalidates and re-syncs on a sort change, syncs new ranges and invalidates removed ones, and deletes lists', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', fourRooms());
    const first = await sync3575(proxy, alice.token, { lists: { l: { ranges: [[0, 1]], timeline_limit: 1 } } });
    assert.deepEqual(first.body.lists.l?.ops, [{ op: 'SYNC', range: [0, 1], room_ids: ['!d:fake', '!c:fake'] }]);
    const grown = await sync3575(proxy, alice.token, { lists: { l: { ranges: [[2, 3]] } } }, { pos: first.body.pos });
    assert.deepEqual(grown.body.lists.l?.ops, [
      { op: 'INVALIDATE', range: [0, 1] },
      { op: 'SYNC', range: [2, 3], room_ids: ['!b:fake', '!a:fake'] },
    ]);
    assert.equal((grown.body.rooms['!b:fake'] as Room3575).initial, true);
    // !d changes while out of every window; coming back, it is sent in full, required_state included.
    await pushSync(fake, alice, syncResponse({ join: { '!d:fake': { timeline: [message('missed')] } } }));
    const back = await sync3575(
      proxy,
      alice.token,
      { lists: { l: { ranges: [[0, 1]], required_state: [['m.room.create', '']] } } },
      { pos: grown.body.pos },
    );
    assert.deepEqual(back.body.lists.l?.ops, [
      { op: 'INVALIDATE', range: [2, 3] },
      { op: 'SYNC', range: [0, 1], room_ids: ['!d:fake', '!c:fake'] },
    ]);
    const d = back.body.rooms['!d:fake'] as Room3575;
    assert.equal(d.initial, true, 'a room re-entering a window is sent from scratch');
    assert.equal(d.name, 'bravo');
    assert.deepEqual(
      d.required_state?.map((e) => e.type),
      ['m.room.create'],
    );
    const resorted = await sync3575(proxy, alice.token, { lists: { l: { sort: ['by_name'] } } }, { pos: back.body.pos });
    assert.deepEqual(resorted.body.lists.l?.ops, [
      { op: 'INVALIDATE', range: [0, 1] },
      { op: 'SYNC', range: [0, 1], room_ids: ['!b:fake', '!d:fake'] },
    ]);
    const deleted = await sync3575(proxy, alice.token, { lists: { l: { deleted: true } } }, { pos: resorted.body.pos });
    assert.deepEqual(deleted.body.lists, {});
  });

  it('gives slow_get_all_rooms one SYNC of everything, then a lone INSERT for a new room', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', fourRooms());
    const first = await sync3575(proxy, alice.token, { lists: { all: { slow_get_all_rooms: true, timeline_limit: 1 } } });
    assert.deepEqual(first.body.lists.all?.ops, [{ op: 'SYNC', range: [0, 3], room_ids: ['!d:fake', '!c:fake', '!b:fake', '!a:fake'] }]);
    await pushSync(
      fake,
      alice,
      syncResponse({ join: { '!e:fake': { state: createRoomState('!e:fake', ME), timeline: [message('new')] } } }),
    );
    const next = await sync3575(proxy, alice.token, {}, { pos: first.body.pos });
    assert.deepEqual(next.body.lists.all?.ops, [{ op: 'INSERT', index: 0, room_id: '!e:fake' }]);
    assert.equal(next.body.lists.all?.count, 5);
  });

  it('calculates names from heroes, sends heroes on request, falls back to a DM hero avatar and signals its removal with null', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        join: {
          '!dm:fake': {
            state: [...createRoomState('!dm:fake', ME), member(BOB, 'join', { displayname: 'Bob', avatarUrl: 'mxc://fake/bob' })],
            timeline: [message('hi')],
            summary: { heroes: [BOB], joinedCount: 2, invitedCount: 0 },
          },
          '!group:fake': {
            state: [
              ...createRoomState('!group:fake', ME),
              member(BOB, 'join', { displayname: 'Bob' }),
              member(CAROL, 'join', { displayname: 'Carol' }),
            ],
            timeline: [message('all')],
            summary: { heroes: [BOB, CAROL], joinedCount: 5, invitedCount: 0 },
          },
          '!avatar:fake': {
            state: [
              ...createRoomState('!avatar:fake', ME, { name: 'Pictures' }),
              stateEvent('m.room.avatar', '', { url: 'mxc://fake/pic' }),
            ],
            timeline: [message('pic')],
          },
        },
        accountData: [{ type: 'm.direct', content: { [BOB]: ['!dm:fake'] } }],
      }),
    );
    const req = { lists: { l: { ranges: [[0, 9]], timeline_limit: 1, include_heroes: true } } };
    const first = await sync3575(proxy, alice.token, req);
    const dm = first.body.rooms['!dm:fake'] as Room3575;
    const group = first.body.rooms['!group:fake'] as Room3575;
    const pics = first.body.rooms['!avatar:fake'] as Room3575;
    assert.equal(dm.name, 'Bob');
    assert.equal(dm.avatar, 'mxc://fake/bob', "a DM without an avatar shows the other member's");
    assert.equal(dm.is_dm, true);
    assert.equal(group.name, 'Bob, Carol and 2 others');
    assert.deepEqual(
      group.heroes?.map((h) => h.user_id),
      [BOB, CAROL],
    );
    assert.equal(pics.heroes, undefined, 'no heroes for a named room');
    assert.equal(pics.avatar, 'mxc://fake/pic');
    assert.equal(group.joined_count, 5);

    await pushSync(fake, alice, syncResponse({ join: { '!avatar:fake': { timeline: [stateEvent('m.room.avatar', '', {})] } } }));
    const next = await sync3575(proxy, alice.token, {}, { pos: first.body.pos });
    const after = next.body.rooms['!avatar:fake'] as Room3575;
    assert.equal(after.avatar, null, 'a removed avatar is null');
    assert.equal(after.initial, undefined);
  });

  it('orders by notification level, highlights first, invites counted as highlights', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        join: {
          '!quiet:fake': { state: createRoomState('!quiet:fake', ME, { name: 'quiet' }), timeline: [message('q')] },
          '!noisy:fake': {
            state: createRoomState('!noisy:fake', ME, { name: 'noisy' }),
            timeline: [message('n')],
            unread: { notification_count: 3, highlight_count: 0 },
          },
          '!ping:fake': {
            state: createRoomState('!ping:fake', ME, { name: 'ping' }),
            timeline: [message('p')],
            unread: { notification_count: 1, highlight_count: 1 },
          },
        },
      }),
    );
    const res = await sync3575(proxy, alice.token, {
      lists: { l: { ranges: [[0, 9]], sort: ['by_notification_level', 'by_name'], timeline_limit: 0 } },
    });
    assert.deepEqual(res.body.lists.l?.ops?.[0], { op: 'SYNC', range: [0, 2], room_ids: ['!ping:fake', '!noisy:fake', '!quiet:fake'] });
    assert.equal((res.body.rooms['!noisy:fake'] as Room3575).notification_count, 3);
  });

  it('hides rooms replaced by a joined successor from lists and sends them through include_old_rooms; is_tombstoned filters', async (t) => {
    const { fake, proxy } = await startStack(t);
    const oldState = [
      ...createRoomState('!old:fake', ME, { name: 'Old' }),
      stateEvent('m.room.tombstone', '', { replacement_room: '!new:fake', body: 'moved' }),
    ];
    const newState = createRoomState('!new:fake', ME, { name: 'New' }).map((e) =>
      e.type === 'm.room.create' ? { ...e, content: { ...e.content, predecessor: { room_id: '!old:fake', event_id: '$x' } } } : e,
    );
    const alice = addUser(
      fake,
      ME,
      'A',
      syncResponse({
        join: {
          '!old:fake': { state: oldState, timeline: [message('before')] },
          '!new:fake': { state: newState, timeline: [message('after')] },
        },
      }),
    );
    const res = await sync3575(proxy, alice.token, {
      lists: {
        l: { ranges: [[0, 9]], timeline_limit: 1, include_old_rooms: { timeline_limit: 1, required_state: [['m.room.tombstone', '']] } },
        tomb: { ranges: [[0, 9]], timeline_limit: 0, filters: { is_tombstoned: true } },
      },
    });
    assert.deepEqual(res.body.lists.l?.ops?.[0], { op: 'SYNC', range: [0, 0], room_ids: ['!new:fake'] });
    assert.equal(res.body.lists.tomb?.count, 0, 'the old room is in no list');
    const old = res.body.rooms['!old:fake'];
    assert.ok(old, 'the predecessor comes along');
    assert.deepEqual(
      old.required_state?.map((e) => e.type),
      ['m.room.tombstone'],
    );
  });

  it('moves rooms by recency only for bump_event_types, and timestamps them by those events', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', fourRooms());
    const req = { lists: { l: { ranges: [[0, 9]], timeline_limit: 1, bump_event_types: ['m.room.message'] } } };
    const first = await sync3575(proxy, alice.token, req);
    assert.deepEqual(first.body.lists.l?.ops?.[0], { op: 'SYNC', range: [0, 3], room_ids: ['!d:fake', '!c:fake', '!b:fake', '!a:fake'] });
    const reaction = event('m.reaction', { 'm.relates_to': { rel_type: 'm.annotation', event_id: '$x', key: 'y' } });
    await pushSync(fake, alice, syncResponse({ join: { '!a:fake': { timeline: [reaction] } } }));
    const quiet = await sync3575(proxy, alice.token, {}, { pos: first.body.pos });
    assert.deepEqual(quiet.body.lists.l?.ops ?? [], [], 'a reaction is not a bump event here');
    const aBefore = first.body.rooms['!a:fake'] as Room3575;
    assert.equal((quiet.body.rooms['!a:fake'] as Room3575).timestamp, aBefore.timestamp, 'nor does it change the timestamp');
    const msg = message('bump');
    await pushSync(fake, alice, syncResponse({ join: { '!a:fake': { timeline: [msg] } } }));
    const bumped = await sync3575(proxy, alice.token, {}, { pos: quiet.body.pos });
    assert.deepEqual(bumped.body.lists.l?.ops, [
      { op: 'DELETE', index: 3 },
      { op: 'INSERT', index: 0, room_id: '!a:fake' },
    ]);
    assert.equal((bumped.body.rooms['!a:fake'] as Room3575).timestamp, msg.origin_server_ts);
  });

  it('answers a retried pos with the same body the same way, and keeps subscriptions until unsubscribed', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', fourRooms());
    // By name, [0,0] is always !b ("alpha"); !a ("Delta") is only ever seen through its subscription.
    const first = await sync3575(proxy, alice.token, { lists: { l: { ranges: [[0, 0]], sort: ['by_name'], timeline_limit: 1 } } });
    await pushSync(fake, alice, syncResponse({ join: { '!b:fake': { timeline: [message('up')] } } }));
    const body = { room_subscriptions: { '!a:fake': { timeline_limit: 2 } } };
    const once = await sync3575(proxy, alice.token, body, { pos: first.body.pos });
    const again = await sync3575(proxy, alice.token, body, { pos: first.body.pos });
    assert.deepEqual(again.body.lists, once.body.lists, 'the lost response is computed again from the same state');
    assert.deepEqual(again.body.rooms, once.body.rooms);
    assert.deepEqual(Object.keys(again.body.rooms).sort(), ['!a:fake', '!b:fake']);
    await pushSync(fake, alice, syncResponse({ join: { '!a:fake': { timeline: [message('sub')] } } }));
    const sticky = await sync3575(proxy, alice.token, {}, { pos: again.body.pos });
    assert.deepEqual(
      sticky.body.rooms['!a:fake']?.timeline?.map((e) => e.content.body),
      ['sub'],
      'still subscribed without saying so',
    );
    const gone = await sync3575(proxy, alice.token, { unsubscribe_rooms: ['!a:fake'] }, { pos: sticky.body.pos });
    await pushSync(fake, alice, syncResponse({ join: { '!a:fake': { timeline: [message('unseen')] } } }));
    const after = await sync3575(proxy, alice.token, {}, { pos: gone.body.pos, timeout: 300 });
    assert.equal(after.body.rooms['!a:fake'], undefined);
  });

  it('drops a room the user leaves with a DELETE, and sends it once more with the leave', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', fourRooms());
    const first = await sync3575(proxy, alice.token, { lists: { l: { ranges: [[0, 9]], timeline_limit: 2 } } });
    await pushSync(fake, alice, syncResponse({ leave: { '!c:fake': { timeline: [member(ME, 'leave')] } } }));
    const next = await sync3575(proxy, alice.token, {}, { pos: first.body.pos });
    assert.deepEqual(next.body.lists.l?.ops, [{ op: 'DELETE', index: 1 }]);
    assert.equal(next.body.lists.l?.count, 3);
    const left = next.body.rooms['!c:fake'];
    assert.deepEqual(
      left?.timeline?.map((e) => `${e.type}/${e.content.membership}`),
      ['m.room.member/leave'],
    );
    await pushSync(fake, alice, syncResponse({ join: { '!a:fake': { timeline: [message('later')] } } }));
    const later = await sync3575(proxy, alice.token, {}, { pos: next.body.pos });
    assert.equal(later.body.rooms['!c:fake'], undefined, 'only once');
  });

  it('keeps extensions sticky: to_device enabled once keeps delivering', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', syncResponse({ toDevice: [{ type: 'm.test', sender: BOB, content: { n: 1 } }] }));
    const first = await sync3575(proxy, alice.token, { extensions: { to_device: { enabled: true } } });
    const toDevice = first.body.extensions.to_device;
    assert.deepEqual(
      toDevice?.events?.map((e) => e.content.n),
      [1],
    );
    await pushSync(fake, alice, syncResponse({ toDevice: [{ type: 'm.test', sender: BOB, content: { n: 2 } }] }));
    const next = await sync3575(
      proxy,
      alice.token,
      { extensions: { to_device: { since: toDevice?.next_batch } } },
      { pos: first.body.pos },
    );
    assert.deepEqual(
      next.body.extensions.to_device?.events?.map((e) => e.content.n),
      [2],
    );
  });

  it('keeps the sticky changes of a request that waited before it was answered', async (t) => {
    let parked: (() => void) | undefined;
    const { fake, proxy } = await startStack(t, { onWait: () => parked?.() });
    const alice = addUser(fake, ME, 'A', fourRooms());
    const first = await sync3575(proxy, alice.token, { lists: { l: { ranges: [[0, 9]], timeline_limit: 1 } } });
    // Enables typing with nothing to send: the request waits, and a message answers it.
    const waitingStarted = new Promise<void>((resolve) => {
      parked = resolve;
    });
    const waiting = sync3575(proxy, alice.token, { extensions: { typing: { enabled: true } } }, { pos: first.body.pos, timeout: 20_000 });
    await waitingStarted;
    await pushSync(fake, alice, syncResponse({ join: { '!b:fake': { timeline: [message('wake')] } } }));
    const woken = await waiting;
    assert.ok(woken.body.rooms['!b:fake'], 'the message answered the waiting request');
    await pushSync(fake, alice, syncResponse({ join: { '!b:fake': { ephemeral: [{ type: 'm.typing', content: { user_ids: [BOB] } }] } } }));
    const next = await sync3575(proxy, alice.token, {}, { pos: woken.body.pos });
    assert.deepEqual(next.body.extensions.typing?.rooms?.['!b:fake']?.content.user_ids, [BOB], 'typing stays enabled');
  });

  it('long-polls 10 s by default, and answers a new message at once', async (t) => {
    const { fake, proxy, parked } = await startStack(t);
    const alice = addUser(fake, ME, 'A', fourRooms());
    const first = await sync3575(proxy, alice.token, { lists: { l: { ranges: [[0, 9]], timeline_limit: 1 } } });
    // The engine parks a request only while its deadline is ahead: no timeout given, it waits.
    const isParked = parked();
    const waiting = slidingSync(proxy, alice.token, {}, { pos: first.body.pos, path: PATH });
    await isParked;
    await pushSync(fake, alice, syncResponse({ join: { '!b:fake': { timeline: [message('wake')] } } }));
    const res = await waiting;
    assert.equal(res.status, 200);
    assert.ok(res.body.rooms['!b:fake']);
  });

  it('rejects an unknown or foreign pos and overlapping ranges, and serves POST /v3/sync only with a sliding sync body', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', fourRooms());
    const msc4186 = await slidingSync(proxy, alice.token, { lists: { l: { ranges: [[0, 1]] } } });
    const foreign = await sync3575(proxy, alice.token, {}, { pos: msc4186.body.pos });
    assert.equal(foreign.status, 400);
    assert.equal(foreign.body.errcode, 'M_UNKNOWN_POS', 'an MSC4186 pos is not an MSC3575 one');
    const overlapping = await sync3575(proxy, alice.token, {
      lists: {
        l: {
          ranges: [
            [0, 5],
            [3, 9],
          ],
        },
      },
    });
    assert.equal(overlapping.status, 400);
    assert.equal(overlapping.body.errcode, 'M_INVALID_PARAM');
    const v3 = await slidingSync(proxy, alice.token, { lists: { l: { ranges: [[0, 0]] } } }, { path: '/_matrix/client/v3/sync' });
    assert.equal(v3.status, 200);
    assert.equal(v3.body.lists.l?.count, 4);
    const notSliding = await slidingSync(proxy, alice.token, { filter: 'x' }, { path: '/_matrix/client/v3/sync' });
    assert.equal(notSliding.status, 405);
  });
});
