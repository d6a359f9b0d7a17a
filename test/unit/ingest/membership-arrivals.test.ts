import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { interleaveArrivals, membershipArrivals } from '../../../src/ingest/membership-arrivals.js';
import { parseSyncResponse } from '../../../src/upstream/sync-response.js';

const events = (...ts: number[]) => ts.map((originServerTs) => ({ originServerTs }));

describe('invites and knocks among the events of one response', () => {
  it('puts each before the first event newer than it, and takes one position each', () => {
    const { eventNids, arrivalPos } = interleaveArrivals(
      events(10, 20, 30, 40),
      [
        { roomId: '!late', ts: 35 },
        { roomId: '!early', ts: 5 },
        { roomId: '!mid', ts: 20 },
      ],
      100,
    );
    // early(5) < e10 < e20 <= mid(20) < e30 < late(35) < e40: an equal time goes after the event.
    assert.deepEqual(eventNids, [101, 102, 104, 106]);
    assert.deepEqual(Object.fromEntries(arrivalPos), { '!early': 100, '!mid': 103, '!late': 105 });
  });

  it('keeps the response order between equal times and puts those without a time last', () => {
    const { eventNids, arrivalPos } = interleaveArrivals(
      events(10, 50),
      [
        { roomId: '!a', ts: undefined },
        { roomId: '!b', ts: 20 },
        { roomId: '!c', ts: 20 },
        { roomId: '!d', ts: undefined },
      ],
      1,
    );
    assert.deepEqual(eventNids, [1, 4]);
    assert.deepEqual(
      [...arrivalPos],
      [
        ['!b', 2],
        ['!c', 3],
        ['!a', 5],
        ['!d', 6],
      ],
    );
  });

  it("reads the time of the user's own member event, not of others' or of bare stripped state", () => {
    const stripped = (type: string, stateKey: string, extra: object = {}) => ({
      type,
      state_key: stateKey,
      sender: '@bob:x',
      content: {},
      ...extra,
    });
    const parsed = parseSyncResponse({
      next_batch: 's1',
      rooms: {
        invite: {
          '!whole': { invite_state: { events: [stripped('m.room.member', '@alice:x', { event_id: '$i', origin_server_ts: 7 })] } },
          '!bare': { invite_state: { events: [stripped('m.room.member', '@alice:x')] } },
          '!other': {
            invite_state: { events: [stripped('m.room.member', '@bob:x', { origin_server_ts: 3 }), stripped('m.room.member', '@alice:x')] },
          },
        },
        knock: { '!kn': { knock_state: { events: [stripped('m.room.member', '@alice:x', { origin_server_ts: 9 })] } } },
      },
    });
    assert.ok('response' in parsed);
    assert.deepEqual(membershipArrivals(parsed.response, '@alice:x'), [
      { roomId: '!whole', ts: 7 },
      { roomId: '!bare', ts: undefined },
      { roomId: '!other', ts: undefined },
      { roomId: '!kn', ts: 9 },
    ]);
  });
});
