// The in-memory reads that serve live deltas (cache/room-timelines.ts, room-states.ts,
// visibility-histories.ts) against the store reads they stand for, on a room that keeps
// changing: new messages past the ring's size, a redaction (stored events rewritten in place),
// state and history visibility changes, members joining and leaving. Every answer from memory
// must equal the store's; concurrent readers of one change share one load.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { createInProcessBus } from '../../src/bus/bus.js';
import { RoomMetaCache } from '../../src/cache/room-meta-cache.js';
import { RoomStates } from '../../src/cache/room-states.js';
import { RoomTimelines } from '../../src/cache/room-timelines.js';
import { VisibilityHistories } from '../../src/cache/visibility-histories.js';
import { createAccumulator } from '../../src/ingest/accumulator.js';
import type { Queryable } from '../../src/store/db.js';
import { insertToken } from '../../src/store/devices-table.js';
import {
  currentMembers,
  currentState,
  currentStreamPos,
  latestTimelines,
  type StateRow,
  type StateSelector,
  type TimelineQuery,
  visibilityHistory,
} from '../../src/store/room-reads.js';
import { parseSyncResponse } from '../../src/upstream/sync-response.js';
import { event, member, message, stateEvent } from '../support/builders.js';
import { createTestDatabase, testLogger } from '../support/db.js';

const ROOM = '!live:fake';
const ALICE = '@alice:fake';
const DEVICE = { userId: ALICE, deviceId: 'A1' };
const OTHERS = ['@bob:fake', '@carol:fake', '@dan:fake'];

/** A small deterministic generator (mulberry32), so a failure replays. */
function random(seed: number) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function setup(t: TestContext) {
  const { pool } = await createTestDatabase(t);
  const bus = createInProcessBus(testLogger);
  const acc = createAccumulator({ pool, bus, logger: testLogger });
  await insertToken(pool, { tokenHash: Buffer.alloc(32, 7), tokenEncrypted: Buffer.from('x'), ...DEVICE });
  let batch = 0;
  const ingest = async (timeline: unknown[], state: unknown[] = [], summary?: Record<string, unknown>) => {
    const parsed = parseSyncResponse({
      next_batch: `b${++batch}`,
      rooms: {
        join: { [ROOM]: { state: { events: state }, timeline: { events: timeline, limited: false, prev_batch: `pb${batch}` }, summary } },
      },
    });
    assert.ok('response' in parsed, 'error' in parsed ? parsed.error : '');
    await acc.ingest(DEVICE, parsed.response);
  };
  await ingest([
    stateEvent('m.room.create', '', { room_version: '11' }, ALICE),
    member(ALICE, 'join'),
    stateEvent('m.room.history_visibility', '', { history_visibility: 'shared' }, ALICE),
    stateEvent('m.room.name', '', { name: 'live' }, ALICE),
  ]);
  let queries = 0;
  const counted = {
    query: (text: string, values?: unknown[]) => {
      queries++;
      return pool.query(text, values);
    },
  } as unknown as Queryable;
  const metas = new RoomMetaCache(pool, bus);
  await metas.ensure([ROOM]);
  return { pool, bus, ingest, metas, counted, queries: () => queries };
}

const sortRows = (rows: StateRow[]) => [...rows].sort((a, b) => `${a.type}\0${a.stateKey}`.localeCompare(`${b.type}\0${b.stateKey}`));

describe('live caches', () => {
  it('timeline ring answers every query as the store does, across growth past its size and rewrites', async (t) => {
    const { pool, bus, ingest, counted } = await setup(t);
    const ring = new RoomTimelines(counted, bus, { perRoom: 8 });
    const rnd = random(16);
    const sent: string[] = [];
    const check = async (round: number) => {
      const top = await currentStreamPos(pool);
      for (let i = 0; i < 40; i++) {
        const upTo = Math.floor(rnd() * (top + 1));
        const after = rnd() < 0.3 ? 0 : Math.floor(rnd() * (upTo + 1));
        const q: TimelineQuery = { roomId: ROOM, after, upTo, limit: 1 + Math.floor(rnd() * 6) };
        if (rnd() < 0.5) {
          const cut = Math.floor(rnd() * (upTo + 1));
          q.visible = rnd() < 0.5 ? [{ after: 0, upTo: cut }] : [{ after: cut, upTo }];
        }
        const [mine, theirs] = await Promise.all([ring.latest([q]), latestTimelines(pool, [q])]);
        assert.deepEqual(mine.get(ROOM) ?? [], theirs.get(ROOM) ?? [], `round ${round}, query ${JSON.stringify(q)}`);
      }
    };
    for (let round = 0; round < 6; round++) {
      const batch = Array.from({ length: 1 + Math.floor(rnd() * 6) }, (_, k) => message(`m${round}.${k}`, OTHERS[k % 3]));
      sent.push(...batch.map((e) => e.event_id));
      // Round 3 redacts an earlier message (its stored JSON changes in place).
      if (round === 3) batch.push(event('m.room.redaction', { redacts: sent[sent.length - 4] }, { sender: ALICE }));
      await ingest(batch);
      await check(round);
    }
    assert.ok(ring.served.memory > 0, 'some answers came from memory');
  });

  it('connections woken by one event share one load', async (t) => {
    const { pool, bus, ingest, counted, queries } = await setup(t);
    const ring = new RoomTimelines(counted, bus);
    const from = await currentStreamPos(pool);
    await ingest([message('first')]);
    const upTo = await currentStreamPos(pool);
    const before = queries();
    const answers = await Promise.all(Array.from({ length: 50 }, () => ring.latest([{ roomId: ROOM, after: from, upTo, limit: 1 }])));
    assert.equal(queries() - before, 1);
    for (const a of answers) assert.equal(a.get(ROOM)?.length, 1);
    await ingest([message('second')]);
    const next = await currentStreamPos(pool);
    await Promise.all(Array.from({ length: 50 }, () => ring.latest([{ roomId: ROOM, after: upTo, upTo: next, limit: 1 }])));
    assert.equal(queries() - before, 2, 'the new event is one more load');
  });

  it('holds rooms of thousands of members for every woken reader; a room past the bound is read per user', async (t) => {
    const { ingest, metas, counted, queries, bus } = await setup(t);
    const states = new RoomStates(counted, bus, metas);
    const histories = new VisibilityHistories(counted, bus, metas);
    const readers = Array.from({ length: 50 }, (_, i) => `@reader${i}:fake`);
    const readAll = async () => {
      const before = queries();
      await Promise.all(readers.map((userId) => histories.get(userId, [ROOM])));
      await Promise.all(readers.map((userId) => states.members([{ roomId: ROOM, userId }])));
      return queries() - before;
    };
    // The homeserver's summary gives the member count (the members themselves need not be stored),
    // here with a join, as it changes in a room.
    await ingest([member('@bob:fake', 'join'), message('to five thousand')], [], { 'm.joined_member_count': 5_000 });
    await metas.ensure([ROOM]);
    assert.equal(metas.get(ROOM)?.joinedCount, 5_000);
    assert.equal(await readAll(), 2, 'one load of the room for each cache, shared by the 50 readers');
    assert.equal(await readAll(), 0, 'then held');
    await ingest([member('@carol:fake', 'join'), message('to twenty thousand')], [], { 'm.joined_member_count': 20_000 });
    await metas.ensure([ROOM]);
    assert.equal(metas.get(ROOM)?.joinedCount, 20_000);
    assert.equal(await readAll(), 100, 'too big to read whole at each state change: each reader reads its own');
  });

  it('room state and visibility histories from memory equal the store, through state changes and a redacted state event', async (t) => {
    const { pool, bus, ingest, metas, counted, queries } = await setup(t);
    const states = new RoomStates(counted, bus, metas);
    const histories = new VisibilityHistories(counted, bus, metas);
    const selectors: StateSelector[] = [
      { all: false, types: ['m.room.name'], keys: [], pairTypes: ['m.room.member'], pairKeys: ['@bob:fake'] },
      { all: false, types: [], keys: [''], pairTypes: [], pairKeys: [] },
      // Overlapping parts select each row once.
      { all: false, types: ['m.room.member'], keys: [''], pairTypes: ['m.room.member', 'm.room.create'], pairKeys: ['@bob:fake', ''] },
      { all: true, types: [], keys: [], pairTypes: [], pairKeys: [] },
    ];
    const compare = async (label: string) => {
      await metas.ensure([ROOM]);
      for (const sel of selectors)
        assert.deepEqual(sortRows(await states.current([ROOM], sel)), sortRows(await currentState(pool, [ROOM], sel)), label);
      const pairs = [ALICE, ...OTHERS, '@nobody:fake'].map((userId) => ({ roomId: ROOM, userId }));
      assert.deepEqual(sortRows(await states.members(pairs)), sortRows(await currentMembers(pool, pairs)), label);
      for (const userId of [ALICE, ...OTHERS])
        assert.deepEqual(
          (await histories.get(userId, [ROOM])).get(ROOM),
          (await visibilityHistory(pool, userId, [ROOM])).get(ROOM),
          `${label}: ${userId}`,
        );
    };
    await ingest([message('no state yet')]);
    await compare('start');
    const settled = queries();
    await compare('again');
    assert.equal(queries(), settled, 'nothing changed: no query');
    const rename = stateEvent('m.room.name', '', { name: 'renamed' }, ALICE);
    await ingest([member('@bob:fake', 'join'), rename, member('@carol:fake', 'join')]);
    await compare('joins and a rename');
    await ingest([stateEvent('m.room.history_visibility', '', { history_visibility: 'joined' }, ALICE), member('@bob:fake', 'leave')]);
    await compare('visibility change and a leave');
    await ingest([event('m.room.redaction', { redacts: rename.event_id }, { sender: ALICE })]);
    await compare('redacted name');
  });
});
