// The plans PostgreSQL picks for an ingest's reads. A part of a big initial sync looks up about
// 1,000 event ids; by the planner's default costs that is dearer than reading a table of up to
// ~100,000 events, so each part read the whole table (40-285 ms a part on the development
// machine, against 3 ms through the index), and every other user's live events waited behind it.
// Plans are read from auto_explain (loaded per session, which needs a superuser, as the test
// server's user is; the test is skipped otherwise).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pg from 'pg';
import { createInProcessBus } from '../../src/bus/bus.js';
import { createAccumulator } from '../../src/ingest/accumulator.js';
import { insertToken } from '../../src/store/devices-table.js';
import { findEvents } from '../../src/store/events-table.js';
import { parseSyncResponse } from '../../src/upstream/sync-response.js';
import { createTestDatabase, testLogger } from '../support/db.js';

const STORED = 20_000;

/** An initial sync of `rooms` rooms of 11 events each (ids unknown to the store). */
function bigSync(rooms: number) {
  let n = 0;
  const ev = (type: string, content: Record<string, unknown>, stateKey?: string) => ({
    type,
    content,
    event_id: `$plan${++n}`,
    sender: '@alice:x',
    origin_server_ts: 1_700_000_000_000 + n,
    ...(stateKey === undefined ? {} : { state_key: stateKey }),
  });
  const join: Record<string, unknown> = {};
  for (let r = 0; r < rooms; r++) {
    join[`!plan${r}:x`] = {
      state: {
        events: [
          ev('m.room.create', { room_version: '11' }, ''),
          ev('m.room.power_levels', {}, ''),
          ev('m.room.join_rules', { join_rule: 'invite' }, ''),
          ev('m.room.name', { name: `room ${r}` }, ''),
          ...['@alice:x', '@bob:x', '@carol:x', '@dan:x', '@erin:x', '@frank:x'].map((u) => ev('m.room.member', { membership: 'join' }, u)),
        ],
      },
      timeline: { events: [ev('m.room.message', { body: `in ${r}` })], limited: true, prev_batch: `pb${r}` },
    };
  }
  const parsed = parseSyncResponse({ next_batch: 'n1', rooms: { join } });
  assert.ok('response' in parsed);
  return parsed.response;
}

describe('ingest query plans', () => {
  it("looks a part's events up through the event_id index, however small the table looks to the planner", async (t) => {
    const { url, pool, drop } = await createTestDatabase(t, { dropManually: true });
    // Every statement's plan, as a notice to the client that ran it.
    const plans: string[] = [];
    const explained = new pg.Pool({
      connectionString: url,
      max: 2,
      options: '-c session_preload_libraries=auto_explain -c auto_explain.log_min_duration=0 -c auto_explain.log_level=notice',
    });
    t.after(async () => {
      await explained.end();
      await drop();
    });
    explained.on('connect', (client) => client.on('notice', (n) => plans.push(n.message ?? '')));
    try {
      await explained.query('SELECT 1');
    } catch (err) {
      t.skip(`auto_explain cannot be loaded: ${(err as Error).message}`);
      return;
    }
    // Other rooms' events, as a deployment has, and statistics about them (as autovacuum keeps).
    await pool.query(
      `INSERT INTO events (event_id, room_id, type, sender, origin_server_ts, in_timeline, json)
       SELECT '$stored' || g, '!other' || (g % 2000) || ':x', 'm.room.message', '@zed:x', g, true, '{}' FROM generate_series(1, $1::int) g`,
      [STORED],
    );
    await pool.query('ANALYZE events');
    const response = bigSync(90);
    const ids = Object.values(response.rooms.join).flatMap((r) => [...r.state, ...r.timeline.events].map((e) => e.event_id));
    assert.ok(ids.length > 900 && ids.length <= 1_000, 'one part of the default size');

    // The fixture is where it matters: by default the planner scans the table for this lookup.
    await findEvents(explained, ids);
    const lookup = (p: string) => p.includes('FROM events WHERE event_id = ANY');
    assert.match(plans.find(lookup) ?? '', /Seq Scan on events/, 'outside an ingest, the default plan reads the whole table');
    plans.length = 0;

    const device = { userId: '@alice:x', deviceId: 'A1' };
    await insertToken(pool, { tokenHash: Buffer.alloc(32, 1), tokenEncrypted: Buffer.from('x'), ...device });
    const acc = createAccumulator({ pool: explained, bus: createInProcessBus(testLogger), logger: testLogger });
    const summary = await acc.ingest(device, response, { initial: true });
    assert.equal(summary.newEvents, ids.length);
    const dedup = plans.filter(lookup);
    assert.equal(dedup.length, 1, 'one dedup lookup in the ingest');
    // (Plan nodes only: the statements' text holds a thousand ids.)
    const nodes = (p: string) => p.split('\n').filter((line) => /^\s*(->\s*)?[A-Z][A-Za-z ]+ (on|using) /.test(line));
    const lookupNodes = nodes(dedup[0] as string).map((l) => l.trim().replace(/\s+\(cost.*/, ''));
    assert.ok(
      lookupNodes.some((l) => l.includes('events_event_id_key')) && !lookupNodes.some((l) => l.includes('Seq Scan')),
      `the dedup lookup goes through the index: ${lookupNodes.join(' / ')}`,
    );
    const scans = plans.flatMap(nodes).filter((l) => /Seq Scan on (events|room_state|rooms|user_rooms)\b/.test(l));
    assert.deepEqual(scans, [], 'no statement of the ingest reads a whole table');
  });
});
