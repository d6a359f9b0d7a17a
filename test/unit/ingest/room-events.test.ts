import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { planEvents, planStateChanges, type RoomBlock, type RoomPlacement, storedJson } from '../../../src/ingest/room-events.js';
import type { KnownEvent } from '../../../src/store/events-table.js';
import type { RoomEvent } from '../../../src/upstream/sync-response.js';

let n = 0;
function ev(type: string, extra: Partial<RoomEvent> = {}): RoomEvent {
  n++;
  return { type, content: {}, event_id: `$e${n}`, sender: '@a:x', origin_server_ts: 1000 + n, ...extra };
}

function block(roomId: string, opts: { state?: RoomEvent[]; timeline?: RoomEvent[]; limited?: boolean; prevBatch?: string }): RoomBlock {
  return {
    roomId,
    room: {
      state: opts.state ?? [],
      timeline: { events: opts.timeline ?? [], limited: opts.limited ?? false, prevBatch: opts.prevBatch },
      ephemeral: [],
      account_data: [],
    } as unknown as RoomBlock['room'],
  };
}

describe('planEvents', () => {
  it('inserts state first, then the timeline in order, marking the gap and prev_batch of a limited chunk', () => {
    const s = ev('m.room.create', { state_key: '' });
    const t1 = ev('m.room.message');
    const t2 = ev('m.room.message');
    const plan = planEvents([block('!r', { state: [s], timeline: [t1, t2], limited: true, prevBatch: 'p1' })], new Map());
    assert.deepEqual(
      plan.inserts.map((e) => [e.eventId, e.inTimeline, e.gapBefore, e.prevBatch]),
      [
        [s.event_id, false, false, undefined],
        [t1.event_id, true, true, 'p1'],
        [t2.event_id, true, false, undefined],
      ],
    );
  });

  it('skips known events and keeps new events older than a known one out of the timeline', () => {
    const old = ev('m.room.message');
    const known = ev('m.room.message');
    const fresh = ev('m.room.message');
    const knownMap = new Map<string, KnownEvent>([[known.event_id, { nid: 5, inTimeline: true }]]);
    const plan = planEvents([block('!r', { timeline: [old, known, fresh] })], knownMap);
    assert.deepEqual(
      plan.inserts.map((e) => [e.eventId, e.inTimeline]),
      [
        [old.event_id, false],
        [fresh.event_id, true],
      ],
    );
  });

  const at = (tip: number, anchor: number | undefined, opts: Partial<RoomPlacement> = {}) =>
    new Map([['!r', { tip, tipTs: 1000 + tip, anchor, blind: false, initial: false, ...opts }]]);

  it("appends a chunk from a poller that saw the tip last, and records the chunk's end", () => {
    const e = ev('m.room.message');
    const plan = planEvents([block('!r', { timeline: [e], prevBatch: 'p' })], new Map(), 'nb', at(5, 5));
    assert.deepEqual(
      plan.inserts.map((i) => [i.inTimeline, i.gapBefore, i.chunkEndToken]),
      [[true, false, 'nb']],
    );
    assert.deepEqual(plan.gapsAfter, []);
    assert.equal(plan.ends.get('!r'), 'tip');
  });

  it("keeps a lagging poller's older events out of the timeline and marks the hole after its anchor", () => {
    const old = ev('m.room.message', { origin_server_ts: 1001 });
    // The poller saw position 2 last; another stored up to 9 since.
    const plan = planEvents([block('!r', { timeline: [old] })], new Map(), 'nb', at(9, 2));
    assert.equal(plan.inserts[0]?.inTimeline, false);
    assert.deepEqual(plan.gapsAfter, [{ roomId: '!r', afterNid: 2 }]);
    assert.equal(plan.ends.get('!r'), 2);
  });

  it('appends newer events of a poller that never saw the tip (its user ignores the sender, say)', () => {
    const newer = ev('m.room.message', { origin_server_ts: 5000 });
    const plan = planEvents([block('!r', { timeline: [newer] })], new Map(), 'nb', at(9, 2));
    assert.equal(plan.inserts[0]?.inTimeline, true);
  });

  it("marks a gap before the first events after a gap in the poller's own stream", () => {
    const e = ev('m.room.message', { origin_server_ts: 5000 });
    const plan = planEvents([block('!r', { timeline: [e], prevBatch: 'p' })], new Map(), 'nb', at(9, undefined, { blind: true }));
    assert.deepEqual(
      plan.inserts.map((i) => [i.inTimeline, i.gapBefore, i.prevBatch]),
      [[true, true, 'p']],
    );
  });

  it('continues the timeline after a known event only when that event is the tip', () => {
    const known = ev('m.room.message');
    const fresh = ev('m.room.message', { origin_server_ts: 1005 });
    const knownMap = new Map<string, KnownEvent>([[known.event_id, { nid: 4, inTimeline: true }]]);
    const plan = planEvents([block('!r', { timeline: [known, fresh] })], knownMap, 'nb', at(9, 4));
    assert.equal(plan.inserts[0]?.inTimeline, false, 'after 4 come stored events up to 9');
    assert.deepEqual(plan.gapsAfter, [{ roomId: '!r', afterNid: 4 }]);
  });

  it('promotes an event first seen in a state block when it shows up in a timeline', () => {
    const s = ev('m.room.name', { state_key: '' });
    const plan = planEvents([block('!r', { timeline: [s], prevBatch: 'p' })], new Map([[s.event_id, { nid: 3, inTimeline: false }]]));
    assert.deepEqual(plan.promote, [{ eventId: s.event_id, prevBatch: 'p' }]);
    assert.equal(plan.inserts.length, 0);
  });

  it('takes transaction ids out of the stored JSON and records them', () => {
    const e = ev('m.room.message', { unsigned: { transaction_id: 'txn1', age: 5, membership: 'join', prev_content: { a: 1 } } });
    const plan = planEvents([block('!r', { timeline: [e] })], new Map());
    assert.deepEqual(plan.txnIds, [{ eventId: e.event_id, txnId: 'txn1' }]);
    const stored = JSON.parse(plan.inserts[0]?.json ?? '{}');
    assert.deepEqual(stored.unsigned, { prev_content: { a: 1 } }, 'per-viewer fields are dropped, the rest kept');
  });

  it('records the transaction id of an event another poller stored first, once', () => {
    const e = ev('m.room.message', { unsigned: { transaction_id: 'txn2' } });
    const known = new Map<string, KnownEvent>([[e.event_id, { nid: 9, inTimeline: true }]]);
    const plan = planEvents([block('!r', { state: [e], timeline: [e] })], known);
    assert.equal(plan.inserts.length, 0);
    assert.deepEqual(plan.txnIds, [{ eventId: e.event_id, txnId: 'txn2' }]);
  });

  it('drops an unsigned object that only held per-viewer fields', () => {
    const { json } = storedJson(ev('m.room.message', { unsigned: { age: 1 } }));
    assert.equal('unsigned' in JSON.parse(json), false);
  });
});

describe('planStateChanges', () => {
  const key = (r: string, t: string, k: string) => `${r}|${t}|${k}`;

  it('applies state-block entries and new timeline state events, in order', () => {
    const name1 = ev('m.room.name', { state_key: '' });
    const name2 = ev('m.room.name', { state_key: '' });
    const nids = new Map([
      [name1.event_id, 10],
      [name2.event_id, 11],
    ]);
    const changes = planStateChanges(
      [block('!r', { state: [name1], timeline: [name2] })],
      new Map(),
      (id) => nids.get(id),
      new Map(),
      key,
      new Set([11]),
    );
    assert.deepEqual(
      changes.map((c) => [c.eventNid, c.atEvent]),
      [
        [10, false],
        [11, true],
      ],
    );
  });

  it('ignores a lagging state block that names an older, already known event', () => {
    const older = ev('m.room.name', { state_key: '' });
    const current = new Map([[key('!r', 'm.room.name', ''), 20]]);
    const changes = planStateChanges(
      [block('!r', { state: [older] })],
      new Map([[older.event_id, { nid: 12, inTimeline: true }]]),
      () => 12,
      current,
      key,
      new Set(),
    );
    assert.deepEqual(changes, []);
  });

  it('records the membership of member events', () => {
    const m = ev('m.room.member', { state_key: '@b:x', content: { membership: 'invite' } });
    const [change] = planStateChanges([block('!r', { state: [m] })], new Map(), () => 7, new Map(), key, new Set());
    assert.equal(change?.membership, 'invite');
  });
});
