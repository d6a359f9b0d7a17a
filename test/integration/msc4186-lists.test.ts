// MSC4186 lists through the whole proxy: counts, one SYNC op per range, recency order, and
// every filter (is_dm, is_encrypted, is_invite, room types, tags, spaces, room_name_like).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRoomState, member, message, stateEvent, stripped, syncResponse } from '../support/builders.js';
import { addUser, listIds, pushSync, type SsBody, slidingSync, startStack } from '../support/sliding-sync-client.js';

const ME = '@alice:fake';
const BOB = '@bob:fake';
const sorted = (ids: string[]) => [...ids].sort();
const roomKeys = (body: SsBody) => sorted(Object.keys(body.rooms));
const list = (extra: Record<string, unknown> = {}) => ({ timeline_limit: 1, required_state: [], ...extra });

/** n joined rooms !r1..!rn; the later the number, the more recent its last event. */
function plainRooms(n: number) {
  const join: Record<string, { state: ReturnType<typeof createRoomState>; timeline: ReturnType<typeof message>[] }> = {};
  for (let i = 1; i <= n; i++) join[`!r${i}:fake`] = { state: createRoomState(`!r${i}:fake`, ME), timeline: [message(`hello ${i}`)] };
  return syncResponse({ join });
}

describe('MSC4186 lists', () => {
  it('counts rooms and sends one SYNC op per range with the room ids of that slice', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', plainRooms(5));
    const res = await slidingSync(proxy, alice.token, {
      lists: {
        one: list({ ranges: [[0, 1]] }),
        two: list({
          ranges: [
            [0, 0],
            [2, 3],
          ],
        }),
      },
    });
    assert.equal(res.status, 200);
    assert.equal(typeof res.body.pos, 'string');
    assert.equal(res.body.lists.one?.count, 5);
    assert.equal(res.body.lists.two?.count, 5);
    assert.deepEqual(res.body.lists.one?.ops, [{ op: 'SYNC', range: [0, 1], room_ids: ['!r5:fake', '!r4:fake'] }]);
    assert.deepEqual(res.body.lists.two?.ops, [
      { op: 'SYNC', range: [0, 0], room_ids: ['!r5:fake'] },
      { op: 'SYNC', range: [2, 3], room_ids: ['!r3:fake', '!r2:fake'] },
    ]);
    // The union of the windows is sent; the room outside every window is not.
    assert.deepEqual(roomKeys(res.body), ['!r2:fake', '!r3:fake', '!r4:fake', '!r5:fake']);
  });

  it('treats a list without ranges as all of its rooms', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', plainRooms(4));
    const res = await slidingSync(proxy, alice.token, { lists: { all: list() } });
    assert.equal(res.status, 200);
    assert.equal(res.body.lists.all?.count, 4);
    assert.deepEqual(listIds(res.body, 'all'), ['!r4:fake', '!r3:fake', '!r2:fake', '!r1:fake']);
    assert.deepEqual(roomKeys(res.body), ['!r1:fake', '!r2:fake', '!r3:fake', '!r4:fake']);
  });

  it('orders rooms by most recent activity: a new message moves an old room to the top', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', plainRooms(3));
    const req = { lists: { recent: list({ ranges: [[0, 9]] }) } };
    const first = await slidingSync(proxy, alice.token, req);
    assert.deepEqual(listIds(first.body, 'recent'), ['!r3:fake', '!r2:fake', '!r1:fake']);
    await pushSync(fake, alice, syncResponse({ join: { '!r1:fake': { timeline: [message('wake up')] } } }));
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    assert.equal(next.status, 200);
    assert.deepEqual(listIds(next.body, 'recent'), ['!r1:fake', '!r3:fake', '!r2:fake']);
    assert.deepEqual(Object.keys(next.body.rooms), ['!r1:fake'], 'only the room with news is sent');
    // A window of one now shows the newly active room.
    const top = await slidingSync(proxy, alice.token, { lists: { top: list({ ranges: [[0, 0]] }) } }, { pos: next.body.pos, timeout: 0 });
    assert.deepEqual(listIds(top.body, 'top'), ['!r1:fake']);
  });

  it('applies every filter', async (t) => {
    const { fake, proxy } = await startStack(t);
    const join: Record<string, unknown> = {
      '!plain:fake': { state: createRoomState('!plain:fake', ME), timeline: [message('plain')] },
      '!dm:fake': { state: createRoomState('!dm:fake', ME, { joined: [BOB] }), timeline: [message('dm')] },
      '!enc:fake': { state: createRoomState('!enc:fake', ME, { encrypted: true }), timeline: [message('enc')] },
      '!custom:fake': { state: createRoomState('!custom:fake', ME, { type: 'org.example.custom' }), timeline: [message('custom')] },
      '!space:fake': {
        state: [...createRoomState('!space:fake', ME, { type: 'm.space' }), stateEvent('m.space.child', '!child:fake', { via: ['fake'] })],
        timeline: [message('space')],
      },
      '!child:fake': { state: createRoomState('!child:fake', ME), timeline: [message('child')] },
      '!fav:fake': {
        state: createRoomState('!fav:fake', ME),
        timeline: [message('fav')],
        accountData: [{ type: 'm.tag', content: { tags: { 'm.favourite': { order: 0.5 } } } }],
      },
      '!low:fake': {
        state: createRoomState('!low:fake', ME),
        timeline: [message('low')],
        accountData: [{ type: 'm.tag', content: { tags: { 'm.lowpriority': {} } } }],
      },
      '!named:fake': { state: createRoomState('!named:fake', ME, { name: 'Project Phoenix' }), timeline: [message('named')] },
    };
    const invite = { '!inv:fake': [...createRoomState('!inv:fake', BOB).map(stripped), stripped(member(ME, 'invite', { sender: BOB }))] };
    const accountData = [{ type: 'm.direct', content: { [BOB]: ['!dm:fake'] } }];
    const alice = addUser(fake, ME, 'A', syncResponse({ join: join as never, invite, accountData }));
    const all = Object.keys(join).concat('!inv:fake');
    const filters: Record<string, Record<string, unknown>> = {
      dm: { is_dm: true },
      notDm: { is_dm: false },
      enc: { is_encrypted: true },
      notEnc: { is_encrypted: false },
      inv: { is_invite: true },
      notInv: { is_invite: false },
      invAlias: { is_invited: true },
      notInvAlias: { is_invited: false },
      spaces: { room_types: ['m.space'] },
      untyped: { room_types: [null] },
      notSpace: { not_room_types: ['m.space'] },
      notWins: { room_types: [null, 'm.space'], not_room_types: ['m.space'] },
      fav: { tags: ['m.favourite'] },
      anyTag: { tags: ['m.favourite', 'm.lowpriority'] },
      notLow: { not_tags: ['m.lowpriority'] },
      inSpace: { spaces: ['!space:fake'] },
      notJoinedSpace: { spaces: ['!nowhere:fake'] },
      nameLike: { room_name_like: 'phoenix' },
      combined: { is_dm: false, tags: ['m.favourite'] },
    };
    const lists = Object.fromEntries(Object.entries(filters).map(([k, f]) => [k, list({ ranges: [[0, 49]], filters: f })]));
    const res = await slidingSync(proxy, alice.token, { lists });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const got = (name: string) => sorted(listIds(res.body, name));
    const without = (...ids: string[]) => sorted(all.filter((id) => !ids.includes(id)));
    assert.deepEqual(got('dm'), ['!dm:fake']);
    assert.deepEqual(got('notDm'), without('!dm:fake'));
    assert.deepEqual(got('enc'), ['!enc:fake']);
    assert.ok(got('notEnc').includes('!plain:fake') && !got('notEnc').includes('!enc:fake'));
    assert.deepEqual(got('inv'), ['!inv:fake']);
    assert.deepEqual(got('notInv'), without('!inv:fake'));
    assert.deepEqual(got('invAlias'), ['!inv:fake'], 'is_invited is an alias of is_invite');
    assert.deepEqual(got('notInvAlias'), without('!inv:fake'));
    assert.deepEqual(got('spaces'), ['!space:fake']);
    assert.ok(!got('untyped').includes('!space:fake') && !got('untyped').includes('!custom:fake'));
    assert.ok(got('untyped').includes('!plain:fake') && got('untyped').includes('!child:fake'));
    assert.ok(got('notSpace').includes('!custom:fake') && !got('notSpace').includes('!space:fake'));
    assert.ok(got('notWins').includes('!plain:fake'));
    assert.ok(!got('notWins').includes('!space:fake') && !got('notWins').includes('!custom:fake'), 'not_room_types wins');
    assert.deepEqual(got('fav'), ['!fav:fake']);
    assert.deepEqual(got('anyTag'), ['!fav:fake', '!low:fake']);
    assert.deepEqual(got('notLow'), without('!low:fake'));
    assert.deepEqual(got('inSpace'), ['!child:fake']);
    assert.deepEqual(got('notJoinedSpace'), []);
    assert.deepEqual(got('nameLike'), ['!named:fake']);
    assert.deepEqual(got('combined'), ['!fav:fake']);
    for (const name of Object.keys(filters)) assert.equal(res.body.lists[name]?.count, got(name).length, `count of ${name}`);
  });

  it('follows account data that changes the filters (m.direct and m.tag)', async (t) => {
    const { fake, proxy } = await startStack(t);
    const alice = addUser(fake, ME, 'A', plainRooms(3));
    const req = {
      lists: {
        dms: list({ ranges: [[0, 9]], filters: { is_dm: true } }),
        favs: list({ ranges: [[0, 9]], filters: { tags: ['m.favourite'] } }),
      },
    };
    const first = await slidingSync(proxy, alice.token, req);
    assert.deepEqual([first.body.lists.dms?.count, first.body.lists.favs?.count], [0, 0]);
    await pushSync(
      fake,
      alice,
      syncResponse({
        accountData: [{ type: 'm.direct', content: { [BOB]: ['!r2:fake'] } }],
        join: { '!r1:fake': { accountData: [{ type: 'm.tag', content: { tags: { 'm.favourite': {} } } }] } },
      }),
    );
    const next = await slidingSync(proxy, alice.token, req, { pos: first.body.pos, timeout: 0 });
    assert.equal(next.status, 200);
    assert.deepEqual(listIds(next.body, 'dms'), ['!r2:fake']);
    assert.deepEqual(listIds(next.body, 'favs'), ['!r1:fake']);
    assert.deepEqual([next.body.lists.dms?.count, next.body.lists.favs?.count], [1, 1]);
  });
});
