// Extension rules on fake contexts, without a database: which rooms a per-room extension
// covers (roomsInScope), to_device's since / next_batch bookkeeping over an in-memory inbox, and
// typing's memory of what each room was last sent.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RoomSent } from '../../../src/sync/connections.js';
import { type ExtensionContext, roomsInScope } from '../../../src/sync/extensions/index.js';
import { type ToDeviceInbox, toDeviceExtension } from '../../../src/sync/extensions/to-device.js';
import { typingExtension } from '../../../src/sync/extensions/typing.js';
import type { RawJson } from '../../../src/sync/json.js';

const device = { userId: '@me:x', deviceId: 'D' };

/** Only the fields a test sets are real; extensions must not touch the rest. */
function fakeContext(fields: Partial<ExtensionContext>): ExtensionContext {
  return {
    device,
    request: {},
    positions: {},
    roomsSent: new Map(),
    initial: false,
    from: 0,
    upTo: 0,
    listRooms: new Map(),
    subscribedRooms: [],
    sentRooms: {},
    scopeCache: new Map(),
    ...fields,
  } as ExtensionContext;
}

describe('roomsInScope', () => {
  // List "a" has two ranges, [0,1] and [5,6]: the engine hands over the rooms of both windows.
  const listRooms = new Map([
    ['a', ['!a0', '!a1', '!a5', '!a6']],
    ['b', ['!b0', '!a1']],
    ['empty', []],
  ]);
  const subscribedRooms = ['!s1', '!s2'];
  const scope = (lists: string[] | undefined, rooms: string[] | undefined) =>
    roomsInScope(fakeContext({ listRooms, subscribedRooms }), { lists, rooms }).sort();

  it('covers every list and every subscription when lists and rooms are absent or "*"', () => {
    const all = ['!a0', '!a1', '!a5', '!a6', '!b0', '!s1', '!s2'];
    assert.deepEqual(scope(undefined, undefined), all);
    assert.deepEqual(scope(['*'], ['*']), all);
    assert.deepEqual(scope(['b', '*'], undefined), all, '"*" among names still means all');
  });

  it('covers nothing for [] and [], and only the other half for one []', () => {
    assert.deepEqual(scope([], []), []);
    assert.deepEqual(scope([], undefined), ['!s1', '!s2']);
    assert.deepEqual(scope(undefined, []), ['!a0', '!a1', '!a5', '!a6', '!b0']);
  });

  it('covers the rooms of named lists, in all their ranges, once each', () => {
    assert.deepEqual(scope(['a'], []), ['!a0', '!a1', '!a5', '!a6']);
    assert.deepEqual(scope(['b'], []), ['!a1', '!b0']);
    assert.deepEqual(scope(['a', 'b'], []), ['!a0', '!a1', '!a5', '!a6', '!b0']);
    assert.deepEqual(scope(['empty', 'unknown'], []), []);
  });

  it('covers named rooms only while they are in some list window or subscribed', () => {
    // !a3 sits between list a's two ranges: not in any window, so not in scope.
    assert.deepEqual(scope([], ['!a5', '!s2', '!a3', '!nowhere']), ['!a5', '!s2']);
    assert.deepEqual(scope(['b'], ['!a6']), ['!a1', '!a6', '!b0'], 'a named room of another list');
  });

  it('computes a scope once per response and keeps different scopes apart', () => {
    const ctx = fakeContext({ listRooms, subscribedRooms });
    const first = roomsInScope(ctx, { lists: ['a'], rooms: [] });
    assert.equal(roomsInScope(ctx, { lists: ['a'], rooms: [] }), first, 'the same array, from the memo');
    assert.deepEqual(roomsInScope(ctx, { lists: ['b'], rooms: [] }).sort(), ['!a1', '!b0']);
    assert.deepEqual(roomsInScope(ctx, { lists: ['a'], rooms: undefined }).sort(), ['!a0', '!a1', '!a5', '!a6', '!s1', '!s2']);
  });
});

/** An in-memory inbox of this device that records what to_device asks of it. */
function fakeInbox(positions: number[]) {
  let stored = positions.map((pos) => ({ pos, json: JSON.stringify({ type: 't', content: { pos } }) }));
  const calls: string[] = [];
  const inbox: ToDeviceInbox = {
    async after(of, after, limit) {
      assert.deepEqual(of, device, 'only this device');
      calls.push(`select>${after}:${limit}`);
      return stored.filter((m) => m.pos > after).slice(0, limit);
    },
    async ack(of, upTo) {
      assert.deepEqual(of, device, 'only this device');
      calls.push(`ack<=${upTo}`);
      stored = stored.filter((m) => m.pos > upTo);
    },
  };
  return { inbox, calls, left: () => stored.map((m) => m.pos) };
}

async function toDevice(inbox: ReturnType<typeof fakeInbox>, limit: number, since: string | undefined) {
  const out = await toDeviceExtension(fakeContext({ request: { toDevice: { limit, since } } }), inbox.inbox);
  assert.ok(out);
  const data = out.data as { next_batch: string; events: RawJson[] };
  return {
    nextBatch: data.next_batch,
    events: data.events.map((e) => (JSON.parse(e.text) as { content: { pos: number } }).content.pos),
    wakes: out.wakes,
  };
}

describe('to_device since and next_batch', () => {
  it('says nothing unless asked', async () => {
    assert.equal(await toDeviceExtension(fakeContext({})), undefined);
  });

  it('without since: the oldest up to the limit, acknowledging nothing; next_batch is the last one sent', async () => {
    const inbox = fakeInbox([3, 7, 9]);
    assert.deepEqual(await toDevice(inbox, 2, undefined), { nextBatch: '7', events: [3, 7], wakes: true });
    assert.deepEqual(inbox.calls, ['select>0:2']);
    assert.deepEqual(inbox.left(), [3, 7, 9]);
  });

  it('since acknowledges up to it and sends what follows; a retried since gets the same again', async () => {
    const inbox = fakeInbox([3, 7, 9, 12]);
    assert.deepEqual(await toDevice(inbox, 2, '7'), { nextBatch: '12', events: [9, 12], wakes: true });
    assert.deepEqual(inbox.left(), [9, 12]);
    assert.deepEqual(await toDevice(inbox, 2, '7'), { nextBatch: '12', events: [9, 12], wakes: true }, 'the response was lost');
    assert.deepEqual(inbox.calls, ['ack<=7', 'select>7:2', 'ack<=7', 'select>7:2']);
  });

  it('with nothing after since: no events, next_batch stays since, and no wake-up', async () => {
    const inbox = fakeInbox([3, 7]);
    assert.deepEqual(await toDevice(inbox, 100, '7'), { nextBatch: '7', events: [], wakes: false });
    assert.deepEqual(inbox.left(), []);
  });

  it('with an empty inbox and no since: next_batch "0", which acknowledges nothing when echoed', async () => {
    const inbox = fakeInbox([]);
    assert.deepEqual(await toDevice(inbox, 100, undefined), { nextBatch: '0', events: [], wakes: false });
    assert.deepEqual(await toDevice(inbox, 100, '0'), { nextBatch: '0', events: [], wakes: false });
    assert.deepEqual(inbox.calls, ['select>0:100', 'select>0:100'], 'since "0" deletes nothing');
  });
});

describe('typing memory per room', () => {
  const joined = (...ids: string[]) => ({ rooms: new Map(ids.map((id) => [id, { membership: 'join' }])) });
  const typers = new Map([['!r1', { userIds: ['@bob:x'], serial: 4 }]]);
  const typingCache = { get: (roomId: string) => typers.get(roomId) };
  const run = (roomsSent: Map<string, RoomSent>, lists: Map<string, string[]>, user = joined('!r1', '!r2')) =>
    typingExtension(
      fakeContext({
        typing: typingCache as never,
        user: user as never,
        request: { typing: { lists: undefined, rooms: undefined } },
        roomsSent,
        listRooms: lists,
      }),
    );
  const sent = (ty?: string) => ({ pos: 1, tl: 1, rs: '', m: 'join', ty }) as RoomSent;

  it('sends a room in scope whose typers it has not sent, and remembers the serial', async () => {
    const out = await run(new Map(), new Map([['l', ['!r1', '!r2']]]));
    assert.deepEqual(out?.data, { rooms: { '!r1': { type: 'm.typing', content: { user_ids: ['@bob:x'] } } } });
    assert.deepEqual(
      out?.rooms,
      new Map([
        ['!r1', { ty: '4' }],
        ['!r2', { ty: '' }],
      ]),
    );
  });

  it('forgets the serial of a room that left scope, once, so it is sent again on its return', async () => {
    const out = await run(
      new Map([
        ['!r1', sent('4')],
        ['!r2', sent()],
      ]),
      new Map([['l', ['!r2']]]),
    );
    assert.deepEqual(out?.data, { rooms: {} });
    assert.equal(out?.wakes, false);
    assert.deepEqual(
      out?.rooms,
      new Map([
        ['!r1', { ty: undefined }],
        ['!r2', { ty: '' }],
      ]),
    );
    const later = await run(
      new Map([
        ['!r1', sent()],
        ['!r2', sent('')],
      ]),
      new Map([['l', ['!r2']]]),
    );
    assert.deepEqual(later?.rooms, new Map(), 'nothing to write while it stays out');
  });

  it('also forgets it for a room in scope the user is no longer joined to', async () => {
    const out = await run(new Map([['!r1', sent('4')]]), new Map([['l', ['!r1']]]), joined('!r2'));
    assert.deepEqual(out?.rooms, new Map([['!r1', { ty: undefined }]]));
  });
});
