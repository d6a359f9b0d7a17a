// One order per room whatever the poller, as a property: several pollers of one user bring the
// same room's stream, each from its own start (a full initial sync with a short limited timeline,
// or a to-device-only sync), in its own chunks, some of them skipped, interleaved at random (a
// slow poller's response lands after a faster one's). After every response, the timeline a new
// connection is served, completed by paginating back from its prev_batch (the homeserver's
// /messages, modelled here), is the homeserver's order; so is what a long-lived connection
// shows when it appends each delta (and starts over from its prev_batch when told `limited`).
// Served timelines never stitch across a hole: consecutive events are consecutive upstream.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createInProcessBus } from '../../src/bus/bus.js';
import { createAccumulator, type IngestOptions } from '../../src/ingest/accumulator.js';
import { latestTimelines, prevBatchFrom, type TimelineRow } from '../../src/store/room-reads.js';
import { timelineWindow } from '../../src/sync/timeline-window.js';
import { parseSyncResponse } from '../../src/upstream/sync-response.js';
import { createTestDatabase, testLogger } from '../support/db.js';

/** The initial sync's timeline limit. */
const INITIAL_LIMIT = 2;

interface PollerSpec {
  /** Events the homeserver had when the poller started. */
  start: number;
  toDeviceOnly: boolean;
  /** Sizes of its later responses' chunks, and which responses it skips. */
  chunks: { size: number; skipped: boolean }[];
}

interface Scenario {
  events: number;
  pollers: PollerSpec[];
  /** Which poller's next response lands next. */
  schedule: number[];
  limit: number;
}

const scenario: fc.Arbitrary<Scenario> = fc.integer({ min: 4, max: 14 }).chain((events) =>
  fc.record({
    events: fc.constant(events),
    pollers: fc.array(
      fc.record({
        start: fc.integer({ min: 1, max: events }),
        toDeviceOnly: fc.boolean(),
        chunks: fc.array(fc.record({ size: fc.integer({ min: 1, max: 4 }), skipped: fc.boolean() }), { maxLength: 14 }),
      }),
      { minLength: 2, maxLength: 3 },
    ),
    schedule: fc.array(fc.nat(2), { maxLength: 30 }),
    limit: fc.integer({ min: 1, max: events + 2 }),
  }),
);

/** The /messages token from just before upstream event `k` (prev_batch and next_batch alike). */
const token = (k: number) => `t${k}`;
const tokenIndex = (t: string) => Number(t.slice(1));

let run = 0;

describe('ingest order across pollers (property)', () => {
  it('serves every room in the homeserver order, with every hole reachable through prev_batch', async (t) => {
    const { pool } = await createTestDatabase(t);
    const acc = createAccumulator({ pool, bus: createInProcessBus(testLogger), logger: testLogger });
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        run++;
        const roomId = `!order${run}:x`;
        const upstream = Array.from({ length: s.events }, (_, k) => ({
          type: k === 0 ? 'm.room.create' : 'm.room.message',
          ...(k === 0 ? { state_key: '' } : {}),
          content: k === 0 ? { room_version: '11' } : { body: `m${k}` },
          event_id: `$o${run}_${k}`,
          sender: '@u:x',
          origin_server_ts: 1_700_000_000_000 + k,
        }));
        const indexOf = new Map(upstream.map((e, k) => [e.event_id, k]));
        const body = (next: number, from: number, to: number, limited: boolean, initial = false) => {
          const timeline = { events: upstream.slice(from, to), limited, prev_batch: token(from) };
          const state = { events: initial && from > 0 ? [upstream[0]] : [] };
          return { next_batch: token(next), rooms: { join: { [roomId]: { state, timeline } } } };
        };
        // Each poller's responses, in its own order.
        const queues = s.pollers.map((p) => {
          const device = { userId: '@u:x', deviceId: `D${run}_${s.pollers.indexOf(p)}` };
          const steps: (() => Promise<unknown>)[] = [];
          if (p.toDeviceOnly) {
            steps.push(() => ingest(device, { next_batch: token(p.start) }, { roomsOmitted: true, initial: true }));
          } else {
            const from = Math.max(0, p.start - INITIAL_LIMIT);
            steps.push(() => ingest(device, body(p.start, from, p.start, from > 0, true), { initial: true }));
          }
          let at = p.start;
          for (const chunk of p.chunks) {
            if (at >= s.events) break;
            const [from, to] = [at, Math.min(s.events, at + chunk.size)];
            steps.push(chunk.skipped ? async () => acc.skipped(device) : () => ingest(device, body(to, from, to, false), {}));
            at = to;
          }
          if (at < s.events) steps.push(() => ingest(device, body(s.events, at, s.events, false), {}));
          return steps;
        });
        const ingest = async (device: { userId: string; deviceId: string }, raw: unknown, opts: IngestOptions) => {
          const parsed = parseSyncResponse(raw);
          assert.ok('response' in parsed);
          await acc.ingest(device, parsed.response, opts);
        };

        /** What the client shows: the served events, after what paginating back from prev_batch returns. */
        const shown = async (rows: TimelineRow[], before: number[]) => {
          const { events, limited } = timelineWindow(rows, s.limit);
          const served = events.map((r) => indexOf.get(r.eventId) as number);
          for (let i = 1; i < served.length; i++) {
            assert.equal(served[i], (served[i - 1] as number) + 1, `served ${served} stitches over a hole`);
          }
          if (!limited) return [...before, ...served];
          const oldest = events[0] as TimelineRow;
          const prevBatch = oldest.prevBatch ?? (await prevBatchFrom(pool, roomId, oldest.nid));
          assert.ok(prevBatch, 'a limited timeline has a prev_batch');
          const from = tokenIndex(prevBatch);
          assert.ok(from >= (served[0] as number), `prev_batch ${prevBatch} skips events before ${served[0]}`);
          assert.ok(from <= (served.at(-1) as number) + 1, `prev_batch ${prevBatch} starts after the served events`);
          // /messages backwards from the token: the client keeps what it was served.
          const backfill = Array.from({ length: from }, (_, k) => k).filter((k) => !served.includes(k));
          return [...backfill, ...served];
        };
        const inOrder = (seen: number[]) =>
          assert.deepEqual(
            seen,
            Array.from({ length: seen.length }, (_, k) => k),
          );

        let live = { pos: 0, seen: [] as number[] };
        const check = async () => {
          const fresh = (await latestTimelines(pool, [{ roomId, after: 0, upTo: Number.MAX_SAFE_INTEGER, limit: s.limit }])).get(roomId);
          if (fresh?.length) inOrder(await shown(fresh, []));
          const delta = (await latestTimelines(pool, [{ roomId, after: live.pos, upTo: Number.MAX_SAFE_INTEGER, limit: s.limit }])).get(
            roomId,
          );
          if (delta?.length) {
            const limited = timelineWindow(delta, s.limit).limited;
            live = { pos: (delta[0] as TimelineRow).nid, seen: await shown(delta, limited ? [] : live.seen) };
            inOrder(live.seen);
          }
        };

        for (const p of s.schedule) {
          const step = queues[p % queues.length]?.shift();
          if (!step) continue;
          await step();
          await check();
        }
        for (const queue of queues) {
          for (const step of queue) {
            await step();
            await check();
          }
        }
      }),
      { numRuns: Number(process.env.PROPERTY_RUNS ?? 60) },
    );
  });
});
