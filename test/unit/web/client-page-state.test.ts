// The /client/ page's own logic (web/sync-state.js): folding responses into rooms and lists,
// building the request, and what the inspector says about an exchange.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  applyListOps,
  applyResponse,
  buildRequest,
  createState,
  DEFAULT_LISTS,
  formatJson,
  keepLists,
  listRooms,
  mergeRoom,
  parseEditedObject,
  roomDisplayName,
  summarizeExchange,
  TIMELINE_KEPT,
} from '../../../web/sync-state.js';

const message = (id: string, body = id) => ({ type: 'm.room.message', event_id: id, sender: '@a:x', content: { body } });

describe('list ops', () => {
  it('a SYNC describes every window afresh, so a shrunk range leaves nothing stale', () => {
    const wide = applyListOps([], [{ op: 'SYNC', range: [0, 3], room_ids: ['!a', '!b', '!c', '!d'] }]);
    assert.deepEqual(wide, ['!a', '!b', '!c', '!d']);
    assert.deepEqual(applyListOps(wide, [{ op: 'SYNC', range: [0, 1], room_ids: ['!c', '!a'] }]), ['!c', '!a']);
  });

  it('SYNC into a later window leaves the gap empty', () => {
    const ids = applyListOps([], [{ op: 'SYNC', range: [2, 3], room_ids: ['!c', '!d'] }]);
    assert.equal(ids.length, 4);
    assert.equal(ids[0], undefined);
    assert.deepEqual(ids.slice(2), ['!c', '!d']);
  });

  it('MSC3575 DELETE then INSERT moves a room to the top; INVALIDATE blanks a range', () => {
    const moved = applyListOps(
      ['!a', '!b', '!c'],
      [
        { op: 'DELETE', index: 2 },
        { op: 'INSERT', index: 0, room_id: '!c' },
      ],
    );
    assert.deepEqual(moved, ['!c', '!a', '!b']);
    assert.deepEqual(applyListOps(moved, [{ op: 'INVALIDATE', range: [1, 2] }]), ['!c', undefined, undefined]);
  });
});

describe('rooms', () => {
  it('a live update appends to the timeline and keeps fields it does not repeat', () => {
    const first = mergeRoom(undefined, { initial: true, name: 'Room', notification_count: 2, timeline: [message('$1')] });
    const next = mergeRoom(first, { notification_count: 3, timeline: [message('$2')] });
    assert.equal(next.name, 'Room');
    assert.equal(next.notification_count, 3);
    assert.deepEqual(
      next.timeline.map((e) => e.event_id),
      ['$1', '$2'],
    );
    assert.equal(first.timeline.length, 1, 'the previous room object is not changed');
  });

  it('initial, limited and expanded updates replace the timeline; initial forgets old fields', () => {
    const first = mergeRoom(undefined, { initial: true, name: 'Room', is_dm: true, timeline: [message('$1')] });
    assert.deepEqual(
      mergeRoom(first, { limited: true, timeline: [message('$9')] }).timeline.map((e) => e.event_id),
      ['$9'],
    );
    assert.deepEqual(
      mergeRoom(first, { unstable_expanded_timeline: true, timeline: [message('$0'), message('$1')] }).timeline.map((e) => e.event_id),
      ['$0', '$1'],
      'an expanded timeline replaces the one held',
    );
    const again = mergeRoom(first, { initial: true, timeline: [message('$5')] });
    assert.equal(again.name, undefined);
    assert.equal(again.is_dm, undefined);
    assert.deepEqual(
      again.timeline.map((e) => e.event_id),
      ['$5'],
    );
  });

  it('keeps at most TIMELINE_KEPT events', () => {
    let room = mergeRoom(undefined, { initial: true, timeline: [] });
    for (let i = 0; i < TIMELINE_KEPT + 5; i++) room = mergeRoom(room, { timeline: [message(`$${i}`)] });
    assert.equal(room.timeline.length, TIMELINE_KEPT);
    assert.equal(room.timeline[0]?.event_id, '$5');
  });

  it('state from required_state and from state events in the timeline, latest wins', () => {
    const name = (n: string, id: string) => ({ type: 'm.room.name', state_key: '', event_id: id, content: { name: n } });
    const room = mergeRoom(mergeRoom(undefined, { initial: true, required_state: [name('A', '$a')] }), { timeline: [name('B', '$b')] });
    assert.equal(room.state.size, 1);
    assert.equal(room.state.get('m.room.name\u0000')?.event_id, '$b');
  });

  it('a display name: the name, else the heroes, else the invite name, else the id', () => {
    assert.equal(roomDisplayName('!r', { name: 'Named', heroes: [{ user_id: '@b' }] }), 'Named');
    assert.equal(roomDisplayName('!r', { heroes: [{ user_id: '@b:x', displayname: 'Bob' }, { user_id: '@c:x' }] }), 'Bob, @c:x');
    assert.equal(roomDisplayName('!r', { invite_state: [{ type: 'm.room.name', state_key: '', content: { name: 'Party' } }] }), 'Party');
    assert.equal(roomDisplayName('!r', undefined), '!r');
  });
});

describe('responses', () => {
  it('lists follow their ops; a list without ops is shown by bump_stamp', () => {
    const state = createState();
    applyResponse(state, {
      pos: '1',
      lists: { all: { count: 3, ops: [{ op: 'SYNC', range: [0, 2], room_ids: ['!b', '!a', '!c'] }] }, plain: { count: 3 } },
      rooms: { '!a': { initial: true, bump_stamp: 5 }, '!b': { initial: true, bump_stamp: 9 }, '!c': { initial: true, bump_stamp: 1 } },
      extensions: {},
    });
    assert.deepEqual(
      listRooms(state, 'all').map((r) => r.roomId),
      ['!b', '!a', '!c'],
    );
    assert.deepEqual(
      listRooms(state, 'plain').map((r) => r.roomId),
      ['!b', '!a', '!c'],
    );
    assert.equal(state.lists.get('all')?.count, 3);
    // A response without the list keeps what the page had.
    applyResponse(state, { pos: '2', lists: {}, rooms: { '!c': { bump_stamp: 10 } }, extensions: {} });
    assert.deepEqual(
      listRooms(state, 'all').map((r) => r.roomId),
      ['!b', '!a', '!c'],
    );
    keepLists(state, ['plain']);
    assert.equal(state.lists.has('all'), false);
  });

  it('remembers the to_device next_batch for the next request', () => {
    const state = applyResponse(createState(), { pos: '1', extensions: { to_device: { next_batch: 't7', events: [] } } });
    assert.equal(state.toDeviceSince, 't7');
  });
});

describe('the request', () => {
  const settings = { connId: 'c', lists: { all: { ranges: [[0, 1]] } }, roomSubscriptions: {}, extensions: {} };

  it('subscribes to the selected room on top of the edited subscriptions', () => {
    const body = buildRequest({ ...settings, roomSubscriptions: { '!x': { timeline_limit: 1 } }, selectedRoom: '!s' });
    assert.deepEqual(Object.keys(body.room_subscriptions as object), ['!x', '!s']);
    assert.equal(body.conn_id, 'c');
  });

  it('sends only enabled extensions; to_device carries its since', () => {
    assert.deepEqual(buildRequest(settings).extensions, {});
    const body = buildRequest({ ...settings, extensions: { to_device: true, typing: false }, toDeviceSince: 't7' });
    assert.deepEqual(body.extensions, { to_device: { enabled: true, since: 't7' } });
  });

  it('edited JSON must be an object of objects, with the reason when not', () => {
    assert.deepEqual(parseEditedObject('{"a":{}}', 'Lists'), { a: {} });
    assert.throws(() => parseEditedObject('{', 'Lists'), /Lists: not JSON/);
    assert.throws(() => parseEditedObject('[]', 'Lists'), /must be a JSON object/);
    assert.throws(() => parseEditedObject('{"a":1}', 'Lists'), /"a" must be an object/);
  });
});

describe('the editors', () => {
  it('show JSON that parses back, with ranges and required_state pairs on one line', () => {
    const text = formatJson(DEFAULT_LISTS);
    assert.deepEqual(JSON.parse(text), DEFAULT_LISTS);
    assert.match(text, /\n {4}"ranges": \[\[0,19\]\],\n/);
    assert.match(text, /\n {6}\["m\.room\.name",""\],\n/);
    assert.equal(formatJson({}), '{}');
    assert.equal(formatJson({ a: [] }), '{\n  "a": []\n}');
  });
});

describe('the inspector', () => {
  it('summarizes positions, status, time, size, ops and rooms', () => {
    const line = summarizeExchange({
      pos: '3',
      status: 200,
      ms: 12.4,
      bytes: 2048,
      response: {
        pos: '4',
        lists: { a: { count: 2, ops: [{ op: 'SYNC', range: [0, 1], room_ids: [] }] } },
        rooms: { '!a': {} },
      },
    });
    assert.equal(line, '3 → 4 · 200 · 12 ms · 2.0 KiB · ops SYNC×1 · 1 room');
    assert.match(summarizeExchange({ status: 400, ms: 1, bytes: 10, response: { errcode: 'M_UNKNOWN_POS' } }), /M_UNKNOWN_POS$/);
  });
});
