import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HISTORY_START, type TimelineRow } from '../../../src/store/room-reads.js';
import { historyWanted } from '../../../src/sync/history.js';
import { roomView } from '../../../src/sync/visibility.js';

/** Rows newest first, as the store returns them: nid n, the oldest marked as following a gap when asked. */
const rows = (nids: number[], gapAt?: number): TimelineRow[] =>
  nids.map((nid) => ({
    roomId: '!r',
    nid,
    type: 'm.room.message',
    sender: '@a',
    stateKey: null,
    prevBatch: nid === gapAt ? `pb${nid}` : null,
    gapBefore: nid === gapAt,
    eventId: `$${nid}`,
    json: '{}',
  }));

describe('historyWanted', () => {
  it('asks for what is missing before a gap at the start of what is stored', () => {
    assert.deepEqual(historyWanted('!r', rows([30, 20], 20), 5), { roomId: '!r', gap: { eventId: '$20', prevBatch: 'pb20' }, missing: 3 });
  });

  it('asks for nothing when the stored events fill the timeline (a room list asking 1)', () => {
    assert.equal(historyWanted('!r', rows([30], 30), 1), undefined);
    assert.equal(historyWanted('!r', rows([30, 20, 10], 10), 2), undefined);
  });

  it('asks for nothing at the room start, nor across a gap in the middle', () => {
    assert.equal(historyWanted('!r', rows([30, 20]), 5), undefined, 'no gap: the whole room is stored');
    assert.equal(historyWanted('!r', rows([30, 20, 10], 20), 5), undefined, 'older stored events lie across that gap');
  });
});

describe('roomView below every stream position (fetched history)', () => {
  const positionsSeen = (visible: { after: number; upTo: number }[], positions: number[]) =>
    positions.filter((p) => visible.some((r) => p > r.after && p <= r.upTo));

  it('lets a joined user see `shared` history at negative positions', () => {
    const v = roomView({ membership: 'join', membershipPos: 5 }, 10, { visibility: [], membership: [{ pos: 5, value: 'join' }] });
    assert.deepEqual(positionsSeen(v.visible, [-7, -3, 8]), [-7, -3, 8]);
  });

  it('under `joined`, shows fetched history from the join the fetch placed, not before it', () => {
    const v = roomView({ membership: 'join', membershipPos: 5 }, 10, {
      visibility: [
        { pos: -9, value: 'joined' },
        { pos: 4, value: 'joined' },
      ],
      membership: [
        { pos: -5, value: 'join' },
        { pos: 4, value: 'join' },
      ],
    });
    assert.deepEqual(positionsSeen(v.visible, [-8, -6, -5, -4, 8]), [-5, -4, 8]);
  });

  it('takes the visibility the first contact showed as holding from HISTORY_START: a later joiner sees no fetched history', () => {
    const visibility = [
      { pos: HISTORY_START, value: 'joined' },
      { pos: 4, value: 'joined' },
    ];
    const late = roomView({ membership: 'join', membershipPos: 8 }, 10, { visibility, membership: [{ pos: 8, value: 'join' }] });
    assert.deepEqual(positionsSeen(late.visible, [-8, -2, 6, 8, 9]), [8, 9]);
    // The first contact's own member, joined since before it: all of it.
    const member = [
      { pos: HISTORY_START, value: 'join' },
      { pos: 4, value: 'join' },
    ];
    const early = roomView({ membership: 'join', membershipPos: 4 }, 10, { visibility, membership: member });
    assert.deepEqual(positionsSeen(early.visible, [-8, -2, 6, 8, 9]), [-8, -2, 6, 8, 9]);
  });
});
