import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Change, roomView, type StreamRange } from '../../../src/sync/visibility.js';

const joinedNow = { membership: 'join' as const, membershipPos: 20 };
const leftAt = (pos: number) => ({ membership: 'leave' as const, membershipPos: pos });

/** Which of positions 1..upTo a view lets through. */
function visiblePositions(visible: StreamRange[], upTo: number): number[] {
  const out: number[] = [];
  for (let p = 1; p <= upTo; p++) if (visible.some((r) => p > r.after && p <= r.upTo)) out.push(p);
  return out;
}

const view = (room: Parameters<typeof roomView>[0], visibility: Change[], membership: Change[], now = 30) => {
  const v = roomView(room, now, { visibility, membership });
  return { upTo: v.upTo, positions: visiblePositions(v.visible, v.upTo) };
};

describe('roomView', () => {
  it('ends a left room at the leave and a joined one now', () => {
    assert.equal(view(leftAt(12), [], [{ pos: 12, value: 'leave' }]).upTo, 12);
    assert.equal(view(joinedNow, [], [{ pos: 20, value: 'join' }]).upTo, 30);
  });

  it('gives a joined user all `shared` history, and a peeking one only their own joined stretch', () => {
    const shared = [{ pos: 1, value: 'shared' }];
    assert.equal(view(joinedNow, shared, [{ pos: 20, value: 'join' }]).positions.length, 30);
    const stays = [
      { pos: 5, value: 'join' },
      { pos: 8, value: 'leave' },
    ];
    assert.deepEqual(view(leftAt(8), shared, stays).positions, [5, 6, 7, 8]);
  });

  it('shows a never-joined user only their own rejected invite, and nothing after a ban', () => {
    const invited = [
      { pos: 5, value: 'invite' },
      { pos: 9, value: 'leave' },
    ];
    assert.deepEqual(view(leftAt(9), [{ pos: 1, value: 'shared' }], invited).positions, [9]);
    const banned = [
      { pos: 5, value: 'invite' },
      { pos: 9, value: 'ban' },
    ];
    assert.deepEqual(view({ membership: 'ban', membershipPos: 9 }, [], banned).positions, []);
  });

  it('judges a visibility change by the laxer of old and new, and `invited` from the invite', () => {
    const toJoined = [
      { pos: 1, value: 'shared' },
      { pos: 4, value: 'joined' },
    ];
    assert.deepEqual(view(joinedNow, toJoined, [{ pos: 20, value: 'join' }], 22).positions, [1, 2, 3, 4, 20, 21, 22]);
    const invitedHistory = [{ pos: 1, value: 'invited' }];
    const membership = [
      { pos: 10, value: 'invite' },
      { pos: 20, value: 'join' },
    ];
    // The setting's own event is judged against `shared` before it, as Synapse does.
    assert.deepEqual(view(joinedNow, invitedHistory, membership, 21).positions, [1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]);
  });

  it('lets `world_readable` history through whoever asks, and unknown values count as `shared`', () => {
    assert.equal(view(leftAt(6), [{ pos: 1, value: 'world_readable' }], [{ pos: 6, value: 'leave' }]).positions.length, 6);
    assert.deepEqual(view(leftAt(6), [{ pos: 1, value: 'bogus' }], [{ pos: 6, value: 'leave' }]).positions, []);
  });

  it('gives invites and knocks no timeline', () => {
    assert.deepEqual(roomView({ membership: 'invite', membershipPos: 5 }, 9, { visibility: [], membership: [] }).visible, []);
  });
});
