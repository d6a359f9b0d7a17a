// RoomMetaCache against real Postgres and the real accumulator, with loads held open on
// purpose: a state change committed and published while a load is in flight (after the load
// read the room, before it returned) must never be lost, however the loads interleave.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { createInProcessBus } from '../../src/bus/bus.js';
import { RoomMetaCache } from '../../src/cache/room-meta-cache.js';
import { createAccumulator } from '../../src/ingest/accumulator.js';
import type { Pool } from '../../src/store/db.js';
import { insertToken } from '../../src/store/devices-table.js';
import { parseSyncResponse } from '../../src/upstream/sync-response.js';
import { createTestDatabase, testLogger } from '../support/db.js';
import { gatedPool } from '../support/gated-pool.js';

const ROOM = '!meta:x';
const DEVICE = { userId: '@alice:x', deviceId: 'A1' };
let n = 0;
const ev = (type: string, content: Record<string, unknown>, stateKey?: string) => ({
  type,
  content,
  event_id: `$meta${++n}`,
  sender: DEVICE.userId,
  origin_server_ts: 1_700_000_000_000 + n,
  ...(stateKey === undefined ? {} : { state_key: stateKey }),
});

async function setup(t: TestContext) {
  const { pool } = await createTestDatabase(t);
  const bus = createInProcessBus(testLogger);
  const acc = createAccumulator({ pool, bus, logger: testLogger });
  await insertToken(pool, { tokenHash: Buffer.alloc(32, 1), tokenEncrypted: Buffer.from('x'), ...DEVICE });
  let batch = 0;
  const ingest = async (timeline: unknown[], state: unknown[] = []) => {
    const parsed = parseSyncResponse({
      next_batch: `b${++batch}`,
      rooms: { join: { [ROOM]: { state: { events: state }, timeline: { events: timeline, limited: false, prev_batch: 'pb' } } } },
    });
    assert.ok('response' in parsed, 'error' in parsed ? parsed.error : '');
    await acc.ingest(DEVICE, parsed.response);
  };
  const rename = (name: string) => ingest([ev('m.room.name', { name }, '')]);
  await ingest([ev('m.room.create', { room_version: '11' }, ''), ev('m.room.member', { membership: 'join' }, DEVICE.userId)]);
  await rename('v0');
  const gated = gatedPool(pool);
  const cache = new RoomMetaCache(gated.pool, bus);
  return { cache, gated, ingest, rename };
}

/** Starts `cache.ensure` with its queries held; resolves once they have read the database. */
async function heldLoad(cache: RoomMetaCache, gated: ReturnType<typeof gatedPool>) {
  // roomMeta issues two queries (room row, meta state).
  const held = gated.hold(2);
  const done = cache.ensure([ROOM]);
  await held.read();
  held.stopHolding();
  return { done, release: held.release };
}

describe('RoomMetaCache', () => {
  it('keeps a state change published during the first load', async (t) => {
    const { cache, gated, rename } = await setup(t);
    const load = await heldLoad(cache, gated);
    await rename('v1');
    load.release();
    await load.done;
    await cache.ensure([ROOM]);
    assert.equal(cache.get(ROOM)?.name, 'v1');
  });

  it('keeps a state change published during a reload', async (t) => {
    const { cache, gated, rename } = await setup(t);
    await cache.ensure([ROOM]);
    await rename('v1');
    const load = await heldLoad(cache, gated);
    await rename('v2');
    load.release();
    await load.done;
    await cache.ensure([ROOM]);
    assert.equal(cache.get(ROOM)?.name, 'v2');
  });

  it('does not let a slow first load overwrite a later one (two requests loading one room)', async (t) => {
    const { cache, gated, rename } = await setup(t);
    const slow = await heldLoad(cache, gated);
    await rename('v1');
    // A second request (another user's, say) loads the room after the change and returns first.
    await cache.ensure([ROOM]);
    assert.equal(cache.get(ROOM)?.name, 'v1');
    slow.release();
    await slow.done;
    assert.equal(cache.get(ROOM)?.name, 'v1', 'the slow load read v0 and must not replace v1');
    await cache.ensure([ROOM]);
    assert.equal(cache.get(ROOM)?.name, 'v1');
  });

  it('does not take a slow reload as fresh when its change counter comes round again', async (t) => {
    const { cache, gated, rename } = await setup(t);
    await cache.ensure([ROOM]);
    await rename('v1');
    const slow = await heldLoad(cache, gated); // reads v1
    await rename('v2');
    await cache.ensure([ROOM]); // reads v2, marks the room fresh
    await rename('v3'); // stale again, with the same count the slow reload started from
    slow.release();
    await slow.done;
    await cache.ensure([ROOM]);
    assert.equal(cache.get(ROOM)?.name, 'v3');
  });

  it('keeps recency from bus messages that arrive during the first load', async (t) => {
    const { cache, gated, ingest } = await setup(t);
    const load = await heldLoad(cache, gated);
    await ingest([ev('m.room.message', { body: 'hi' })]);
    load.release();
    await load.done;
    const meta = cache.get(ROOM);
    assert.ok(meta);
    // The load read the room before the message: its latestNid must come from the bus.
    const before = meta.latestNid;
    await cache.ensure([ROOM]);
    assert.equal(before, cache.get(ROOM)?.latestNid);
  });

  it('one load serves concurrent requests for the same rooms', async (t) => {
    const { cache, gated, rename } = await setup(t);
    let queries = 0;
    const inner = gated.pool.query.bind(gated.pool);
    (gated.pool as { query: unknown }).query = (...args: Parameters<Pool['query']>) => {
      queries++;
      // biome-ignore lint/suspicious/noExplicitAny: pg's overloads do not survive a spread
      return (inner as any)(...args);
    };
    await Promise.all([cache.ensure([ROOM]), cache.ensure([ROOM]), cache.ensure([ROOM])]);
    assert.equal(queries, 2);
    assert.equal(cache.get(ROOM)?.name, 'v0');
    await rename('v1');
    await Promise.all([cache.ensure([ROOM]), cache.ensure([ROOM])]);
    assert.equal(queries, 4);
    assert.equal(cache.get(ROOM)?.name, 'v1');
  });

  it('a failed load leaves nothing behind: the next request loads again', async (t) => {
    const { cache, gated } = await setup(t);
    const inner = gated.pool.query.bind(gated.pool);
    let fail = true;
    (gated.pool as { query: unknown }).query = (...args: Parameters<Pool['query']>) => {
      if (fail) return Promise.reject(new Error('connection lost'));
      // biome-ignore lint/suspicious/noExplicitAny: pg's overloads do not survive a spread
      return (inner as any)(...args);
    };
    await assert.rejects(cache.ensure([ROOM]), /connection lost/);
    assert.equal(cache.get(ROOM), undefined);
    fail = false;
    await cache.ensure([ROOM]);
    assert.equal(cache.get(ROOM)?.name, 'v0');
  });
});
