// The accumulator against real Postgres: v2 responses in, stored facts and bus messages out.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { createInProcessBus } from '../../src/bus/bus.js';
import type { BusMessages, BusTopic } from '../../src/bus/messages.js';
import { type AccumulatorOptions, createAccumulator, type IngestOptions } from '../../src/ingest/accumulator.js';
import { ackToDevice, deviceListChangesSince, keyCounts, toDeviceAfter } from '../../src/store/device-inbox-table.js';
import { insertToken } from '../../src/store/devices-table.js';
import { receiptsSince } from '../../src/store/receipts-table.js';
import { currentState, latestTimelines, prevBatchFrom, stateAsOf } from '../../src/store/room-reads.js';
import { userRooms } from '../../src/store/user-rooms-table.js';
import { timelineWindow } from '../../src/sync/timeline-window.js';
import { parseSyncResponse } from '../../src/upstream/sync-response.js';
import { createTestDatabase, testLogger } from '../support/db.js';

const ALL = { all: true, types: [], keys: [], pairTypes: [], pairKeys: [] };
let n = 0;
const ev = (type: string, content: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  type,
  content,
  event_id: `$acc${++n}`,
  sender: '@alice:x',
  origin_server_ts: 1_700_000_000_000 + n,
  ...extra,
});
type Ev = ReturnType<typeof ev>;
const member = (user: string, membership: string, sender = user) => ev('m.room.member', { membership }, { state_key: user, sender });
const create = () => ev('m.room.create', { room_version: '11' }, { state_key: '' });

async function setup(t: TestContext, opts: AccumulatorOptions = {}) {
  const { pool } = await createTestDatabase(t);
  // Every statement a transaction runs, for tests that count them.
  const statements: string[] = [];
  const connect = pool.connect.bind(pool);
  Object.assign(pool, {
    connect: async (...callback: unknown[]) => {
      // pool.query checks out clients with a callback: those are not transactions.
      if (callback.length) return (connect as (...args: unknown[]) => unknown)(...callback);
      const client = await connect();
      if (!(client as { counted?: boolean }).counted) {
        const query = client.query.bind(client) as (...args: unknown[]) => unknown;
        Object.assign(client, {
          counted: true,
          query: (...args: unknown[]) => {
            statements.push(String(typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string })?.text));
            return query(...args);
          },
        });
      }
      return client;
    },
  });
  const bus = createInProcessBus(testLogger);
  const seen: { topic: BusTopic; message: unknown }[] = [];
  for (const topic of [
    'stream.advanced',
    'room.changed',
    'user.rooms_changed',
    'device.data',
    'room.typing',
    'room.receipts',
  ] as BusTopic[]) {
    bus.subscribe(topic, (message) => seen.push({ topic, message }));
  }
  const acc = createAccumulator({ pool, bus, logger: testLogger, ...opts });
  const devices = {
    alice: { userId: '@alice:x', deviceId: 'A1' },
    bob: { userId: '@bob:x', deviceId: 'B1' },
  };
  for (const d of Object.values(devices)) {
    await insertToken(pool, { tokenHash: Buffer.alloc(32, d.deviceId), tokenEncrypted: Buffer.from('x'), ...d });
  }
  const ingest = async (device: { userId: string; deviceId: string }, body: Record<string, unknown>, opts?: IngestOptions) => {
    const parsed = parseSyncResponse(body);
    assert.ok('response' in parsed, 'error' in parsed ? parsed.error : '');
    return acc.ingest(device, parsed.response, opts);
  };
  const messages = <T extends BusTopic>(topic: T) => seen.filter((s) => s.topic === topic).map((s) => s.message as BusMessages[T]);
  return { pool, ingest, devices, messages, statements, bus };
}

const joined = (state: unknown[], timeline: unknown[], extra: Record<string, unknown> = {}) => ({
  state: { events: state },
  timeline: { events: timeline, limited: false, prev_batch: 'pb' },
  ...extra,
});

describe('accumulator', () => {
  it('stores an event seen by two users once, and each user its own membership', async (t) => {
    const { pool, ingest, devices, messages } = await setup(t);
    const c = create();
    const ja = member('@alice:x', 'join');
    const jb = member('@bob:x', 'join');
    const msg = ev('m.room.message', { body: 'hi' });
    await ingest(devices.alice, { next_batch: 'a1', rooms: { join: { '!r:x': joined([c, ja], [jb, msg]) } } });
    await ingest(devices.bob, { next_batch: 'b1', rooms: { join: { '!r:x': joined([c, ja, jb], [msg]) } } });
    const { rows } = await pool.query('SELECT count(*)::int AS n FROM events WHERE event_id = $1', [msg.event_id]);
    assert.equal(rows[0].n, 1);
    const timeline = (await latestTimelines(pool, [{ roomId: '!r:x', after: 0, upTo: 1e12, limit: 10 }])).get('!r:x') ?? [];
    assert.deepEqual(timeline.map((r) => r.eventId).reverse(), [jb.event_id, msg.event_id]);
    for (const user of ['@alice:x', '@bob:x']) assert.equal((await userRooms(pool, user))[0]?.membership, 'join');
    const changed = messages('room.changed');
    assert.equal(changed[0]?.newEvents, 2);
    assert.equal(changed.length, 1, "bob's state block repeats what alice's timeline already stored");
    const devicesRow = await pool.query('SELECT since FROM devices ORDER BY device_id');
    assert.deepEqual(
      devicesRow.rows.map((r) => r.since),
      ['a1', 'b1'],
    );
  });

  it('marks a limited timeline as a gap and keeps its prev_batch', async (t) => {
    const { pool, ingest, devices } = await setup(t);
    const first = ev('m.room.message', { body: 'after gap' });
    await ingest(devices.alice, {
      next_batch: 'a1',
      rooms: {
        join: {
          '!g:x': {
            state: { events: [create(), member('@alice:x', 'join')] },
            timeline: { events: [first], limited: true, prev_batch: 'gap-token' },
          },
        },
      },
    });
    const [row] = (await latestTimelines(pool, [{ roomId: '!g:x', after: 0, upTo: 1e12, limit: 5 }])).get('!g:x') ?? [];
    assert.equal(row?.gapBefore, true);
    assert.equal(row?.prevBatch, 'gap-token');
  });

  it('chooses a /messages token at or after any event: the next chunk start, else the sync token ending its chunk', async (t) => {
    const { pool, ingest, devices } = await setup(t);
    const { prevBatchFrom } = await import('../../src/store/room-reads.js');
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((body) => ev('m.room.message', { body })) as [Ev, Ev, Ev, Ev];
    const room = (timeline: unknown[], prevBatch: string) => ({ timeline: { events: timeline, limited: false, prev_batch: prevBatch } });
    await ingest(devices.alice, {
      next_batch: 'sync-1',
      rooms: { join: { '!pb:x': { state: { events: [create()] }, ...room([a, b, c], 'before-a') } } },
    });
    const nid = async (e: { event_id: string }) =>
      (await pool.query('SELECT nid FROM events WHERE event_id = $1', [e.event_id])).rows[0].nid;
    assert.equal(await prevBatchFrom(pool, '!pb:x', await nid(a)), 'before-a', 'a chunk start has its own token');
    assert.equal(await prevBatchFrom(pool, '!pb:x', await nid(b)), 'sync-1', 'mid-chunk, with no later chunk: the token ending the chunk');
    await ingest(devices.alice, { next_batch: 'sync-2', rooms: { join: { '!pb:x': room([d], 'before-d') } } });
    assert.equal(await prevBatchFrom(pool, '!pb:x', await nid(b)), 'before-d', 'mid-chunk: the next chunk start');
  });

  it('serves a kicked user the state as of the kick, nothing after it', async (t) => {
    const { pool, ingest, devices } = await setup(t);
    const name1 = ev('m.room.name', { name: 'Before' }, { state_key: '' });
    await ingest(devices.bob, {
      next_batch: 'b1',
      rooms: { join: { '!k:x': joined([create(), member('@alice:x', 'join'), member('@bob:x', 'join'), name1], []) } },
    });
    const kick = member('@bob:x', 'leave', '@alice:x');
    await ingest(devices.bob, { next_batch: 'b2', rooms: { leave: { '!k:x': joined([], [kick]) } } });
    const name2 = ev('m.room.name', { name: 'After' }, { state_key: '' });
    await ingest(devices.alice, { next_batch: 'a1', rooms: { join: { '!k:x': joined([], [name2]) } } });

    const [bobRoom] = await userRooms(pool, '@bob:x');
    assert.equal(bobRoom?.membership, 'leave');
    assert.equal(bobRoom?.kicked, true);
    const asOfKick = await stateAsOf(pool, '!k:x', bobRoom?.membershipPos ?? 0, ALL);
    const name = asOfKick.find((s) => s.type === 'm.room.name');
    assert.equal(JSON.parse(name?.json ?? '{}').content.name, 'Before');
    const now = await currentState(pool, ['!k:x'], ALL);
    assert.equal(JSON.parse(now.find((s) => s.type === 'm.room.name')?.json ?? '{}').content.name, 'After');
  });

  it('records bans and self-leaves apart from kicks', async (t) => {
    const { pool, ingest, devices } = await setup(t);
    await ingest(devices.bob, {
      next_batch: 'b1',
      rooms: {
        leave: {
          '!ban:x': joined([create()], [member('@bob:x', 'ban', '@alice:x')]),
          '!self:x': joined([create()], [member('@bob:x', 'leave')]),
        },
      },
    });
    const rooms = new Map((await userRooms(pool, '@bob:x')).map((r) => [r.roomId, r]));
    assert.equal(rooms.get('!ban:x')?.membership, 'ban');
    assert.equal(rooms.get('!self:x')?.membership, 'leave');
    assert.equal(rooms.get('!self:x')?.kicked, false);
  });

  it('stores invites with their stripped state and replaces them on join', async (t) => {
    const { pool, ingest, devices } = await setup(t);
    const stripped = [{ type: 'm.room.name', state_key: '', sender: '@alice:x', content: { name: 'Invited' } }];
    await ingest(devices.bob, { next_batch: 'b1', rooms: { invite: { '!i:x': { invite_state: { events: stripped } } } } });
    let [room] = await userRooms(pool, '@bob:x');
    assert.equal(room?.membership, 'invite');
    assert.deepEqual(JSON.parse(room?.inviteState ?? '[]'), stripped);
    await ingest(devices.bob, { next_batch: 'b2', rooms: { join: { '!i:x': joined([create()], [member('@bob:x', 'join')]) } } });
    [room] = await userRooms(pool, '@bob:x');
    assert.equal(room?.membership, 'join');
    assert.equal(room?.inviteState, null);
  });

  it('redacts a stored event per its room version', async (t) => {
    const { pool, ingest, devices } = await setup(t);
    const secret = ev('m.room.message', { body: 'oops' });
    await ingest(devices.alice, {
      next_batch: 'a1',
      rooms: { join: { '!x:x': joined([create(), member('@alice:x', 'join')], [secret]) } },
    });
    const redaction = ev('m.room.redaction', { redacts: secret.event_id });
    await ingest(devices.alice, { next_batch: 'a2', rooms: { join: { '!x:x': joined([], [redaction]) } } });
    const { rows } = await pool.query('SELECT json, redacted FROM events WHERE event_id = $1', [secret.event_id]);
    assert.equal(rows[0].redacted, true);
    const stored = JSON.parse(rows[0].json);
    assert.deepEqual(stored.content, {});
    assert.equal(stored.unsigned.redacted_because.event_id, redaction.event_id);
  });

  it('keeps transaction ids for the sending device only', async (t) => {
    const { pool, ingest, devices } = await setup(t);
    const sent = ev('m.room.message', { body: 'mine' }, { unsigned: { transaction_id: 'tx9' } });
    await ingest(devices.alice, { next_batch: 'a1', rooms: { join: { '!t:x': joined([create()], [sent]) } } });
    const { rows } = await pool.query('SELECT user_id, device_id, txn_id FROM transaction_ids');
    assert.deepEqual(rows, [{ user_id: '@alice:x', device_id: 'A1', txn_id: 'tx9' }]);
    const stored = await pool.query('SELECT json FROM events WHERE event_id = $1', [sent.event_id]);
    assert.doesNotMatch(stored.rows[0].json, /tx9/);
  });

  it("keeps the sending device's transaction id when another poller stored the event first", async (t) => {
    const { pool, ingest, devices } = await setup(t);
    const alicePhone = { userId: '@alice:x', deviceId: 'A2' };
    await insertToken(pool, { tokenHash: Buffer.alloc(32, 'A2'), tokenEncrypted: Buffer.from('x'), ...alicePhone });
    const c = create();
    const sent = ev('m.room.message', { body: 'mine' });
    // Bob's and Alice's other device's pollers store the event before the sender's poller sees it.
    await ingest(devices.bob, { next_batch: 'b1', rooms: { join: { '!t:x': joined([c], [sent]) } } });
    await ingest(alicePhone, { next_batch: 'p1', rooms: { join: { '!t:x': joined([c], [sent]) } } });
    await ingest(devices.alice, {
      next_batch: 'a1',
      rooms: { join: { '!t:x': joined([c], [{ ...sent, unsigned: { transaction_id: 'tx7' } }]) } },
    });
    const { rows } = await pool.query('SELECT user_id, device_id, txn_id FROM transaction_ids WHERE event_id = $1', [sent.event_id]);
    assert.deepEqual(rows, [{ user_id: '@alice:x', device_id: 'A1', txn_id: 'tx7' }]);
  });

  it('queues to-device messages per device until acknowledged, and device list changes', async (t) => {
    const { pool, ingest, devices, messages } = await setup(t);
    const summary = await ingest(devices.alice, {
      next_batch: 'a1',
      to_device: { events: [1, 2, 3].map((i) => ({ type: 'm.test', sender: '@bob:x', content: { i } })) },
      device_lists: { changed: ['@bob:x'], left: ['@carol:x'] },
      device_one_time_keys_count: { signed_curve25519: 50 },
      device_unused_fallback_key_types: ['signed_curve25519'],
    });
    const queued = await toDeviceAfter(pool, devices.alice, 0, 10);
    assert.deepEqual(
      queued.map((m) => JSON.parse(m.json).content.i),
      [1, 2, 3],
    );
    assert.deepEqual(await toDeviceAfter(pool, devices.bob, 0, 10), [], 'never another device');
    await ackToDevice(pool, devices.alice, queued[1]?.pos ?? 0);
    assert.deepEqual(
      (await toDeviceAfter(pool, devices.alice, 0, 10)).map((m) => JSON.parse(m.json).content.i),
      [3],
    );
    assert.deepEqual(await deviceListChangesSince(pool, devices.alice, 0), { changed: ['@bob:x'], left: ['@carol:x'] });
    assert.equal((await keyCounts(pool, devices.alice))?.otkCounts, '{"signed_curve25519":50}');
    const data = messages('device.data');
    assert.equal(data[0]?.toDevice, 3);
    assert.equal(data[0]?.keys, true);
    assert.ok(summary.pos >= (queued.at(-1)?.pos ?? 0));
  });

  it('stores receipts (private ones visible only to their owner) and announces typing', async (t) => {
    const { pool, ingest, devices, messages } = await setup(t);
    const receipt = {
      type: 'm.receipt',
      content: {
        $m1: { 'm.read': { '@bob:x': { ts: 1, thread_id: 'main' } }, 'm.read.private': { '@bob:x': { ts: 2 } } },
      },
    };
    await ingest(devices.alice, {
      next_batch: 'a1',
      rooms: {
        join: {
          '!rc:x': joined([create()], [], { ephemeral: { events: [receipt, { type: 'm.typing', content: { user_ids: ['@bob:x'] } }] } }),
        },
      },
    });
    const forAlice = await receiptsSince(pool, '!rc:x', '@alice:x', 0);
    assert.deepEqual(
      forAlice.map((r) => [r.receiptType, r.threadId]),
      [['m.read', 'main']],
    );
    assert.equal((await receiptsSince(pool, '!rc:x', '@bob:x', 0)).length, 2);
    assert.deepEqual(messages('room.typing'), [{ roomId: '!rc:x', userIds: ['@bob:x'] }]);
    assert.equal(messages('room.receipts').length, 1);
  });

  it('rolls back everything, since included, when a write fails', async (t) => {
    const { pool, ingest, devices } = await setup(t);
    await pool.query(`ALTER TABLE account_data ADD CONSTRAINT no_evil CHECK (type <> 'evil')`);
    await assert.rejects(
      ingest(devices.alice, {
        next_batch: 'a9',
        rooms: { join: { '!rb:x': joined([create()], [ev('m.room.message', { body: 'x' })]) } },
        account_data: { events: [{ type: 'evil', content: {} }] },
      }),
    );
    const { rows } = await pool.query(
      `SELECT (SELECT count(*)::int FROM events) AS events, (SELECT since FROM devices WHERE device_id = 'A1') AS since`,
    );
    assert.deepEqual(rows[0], { events: 0, since: null });
  });
});

describe('accumulator under load', () => {
  const rooms = (n: number, tag: string) =>
    Object.fromEntries(
      Array.from({ length: n }, (_, i) => [`!${tag}${i}:x`, joined([create()], [ev('m.room.message', { body: `${i}` })])]),
    );

  it("stores a big response in parts and lets another user's live event in between", async (t) => {
    const { pool, ingest, devices, messages, bus } = await setup(t, { chunkEvents: 10 });
    const big = { next_batch: 'a-big', rooms: { join: rooms(20, 'big') } };
    const live = { next_batch: 'b-live', rooms: { join: { '!live:x': joined([create()], [ev('m.room.message', { body: 'now' })]) } } };
    let liveDone: Promise<unknown> | undefined;
    let bigDone = false;
    // The first part of the big response is committed: the live event arrives now.
    const unsubscribe = bus.subscribe('room.changed', ({ roomId }) => {
      if (liveDone || !roomId.startsWith('!big')) return;
      liveDone = ingest(devices.bob, live);
    });
    const bigIngest = ingest(devices.alice, big).then(() => {
      bigDone = true;
    });
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (!liveDone) await new Promise<void>((resolve) => setImmediate(resolve));
    await liveDone;
    unsubscribe();
    assert.equal(bigDone, false, 'the live event was stored while the big response was still being stored');
    await bigIngest;
    const order = messages('room.changed').map((m) => m.roomId);
    const liveAt = order.indexOf('!live:x');
    assert.ok(liveAt > 0 && liveAt < order.length - 1, `live event between the parts: ${order.join(' ')}`);
    const { rows } = await pool.query(`SELECT since FROM devices WHERE device_id = 'A1'`);
    assert.equal(rows[0].since, 'a-big');
  });

  it('advances since with the last part only: a failed part leaves the response to be fetched again', async (t) => {
    const { pool, ingest, devices } = await setup(t, { chunkEvents: 10 });
    await pool.query(`ALTER TABLE account_data ADD CONSTRAINT no_evil CHECK (type <> 'evil')`);
    const join = rooms(20, 'part');
    const body = (accountData: string) => ({
      next_batch: 'a-big',
      rooms: { join },
      account_data: { events: [{ type: accountData, content: {} }] },
    });
    await assert.rejects(ingest(devices.alice, body('evil')));
    const before = await pool.query(`SELECT since FROM devices WHERE device_id = 'A1'`);
    assert.equal(before.rows[0].since, null, 'not acknowledged');
    await ingest(devices.alice, body('fine'));
    const { rows } = await pool.query(
      `SELECT (SELECT count(*)::int FROM events) AS events, (SELECT since FROM devices WHERE device_id = 'A1') AS since`,
    );
    assert.deepEqual(rows[0], { events: 40, since: 'a-big' }, 'every event once, and the position advanced');
  });

  it('recognises an event many pollers bring without looking it up or rewriting its room, and announces it once', async (t) => {
    const { ingest, messages, statements } = await setup(t);
    const msg = ev('m.room.message', { body: 'to everyone' });
    const body = (u: number) => ({
      next_batch: `s${u}`,
      rooms: { join: { '!shared:x': joined([], [msg], { unread_notifications: { notification_count: 1, highlight_count: 0 } }) } },
    });
    await ingest({ userId: '@u0:x', deviceId: 'D' }, body(0));
    statements.length = 0;
    for (let u = 1; u <= 30; u++) await ingest({ userId: `@u${u}:x`, deviceId: 'D' }, body(u));
    assert.deepEqual(
      statements.filter((q) => /\bevents\b|\brooms\b/.test(q) && !/user_rooms/.test(q)),
      [],
      'no event lookup, no event or room write',
    );
    assert.equal(messages('room.changed').filter((m) => m.roomId === '!shared:x').length, 1);
    assert.equal(messages('user.rooms_changed').length, 31, "each user's own unread count is stored");
  });

  it('stores news before queued responses that only repeat stored events, each kind in arrival order', async (t) => {
    const { ingest, messages, devices } = await setup(t);
    const first = ev('m.room.message', { body: 'first' });
    const counts = (c: number) => ({ unread_notifications: { notification_count: c, highlight_count: 0 } });
    const shared = (events: Ev[], c: number) => ({ rooms: { join: { '!shared:x': joined([], events, counts(c)) } } });
    const user = (u: number) => ({ userId: `@u${u}:x`, deviceId: 'D' });
    await ingest(user(0), { next_batch: 's0', ...shared([first], 0) });
    // All queued at once, as pollers whose responses come back together: five repeat the stored
    // message, then a repeat carrying a to-device message (the device's own news), then the
    // first copy of the next message.
    const done = [1, 2, 3, 4, 5].map((u) => ingest(user(u), { next_batch: `s${u}`, ...shared([first], u) }));
    done.push(
      ingest(devices.alice, {
        next_batch: 's6',
        ...shared([first], 6),
        to_device: { events: [{ type: 'm.x', sender: '@o:x', content: {} }] },
      }),
    );
    done.push(ingest(user(7), { next_batch: 's7', ...shared([ev('m.room.message', { body: 'second' })], 7) }));
    await Promise.all(done);
    // Commit order: each transaction's messages carry its position.
    const byCommit = messages('user.rooms_changed')
      .sort((x, y) => x.pos - y.pos)
      .map((m) => m.userId);
    // The first repeat was already running when the others arrived; the news goes next.
    assert.deepEqual(byCommit, ['@u0:x', '@u1:x', '@alice:x', '@u7:x', '@u2:x', '@u3:x', '@u4:x', '@u5:x']);
    const second = messages('room.changed').at(-1);
    const repeat2 = messages('user.rooms_changed').find((m) => m.userId === '@u2:x');
    assert.ok(second && repeat2 && second.pos < repeat2.pos, 'the second message is stored before the queued repeats');
  });

  it('runs ingests queued back to back on one connection, handed back when the queue empties', async (t) => {
    const { pool, ingest } = await setup(t);
    let checkouts = 0;
    const connect = pool.connect.bind(pool);
    Object.assign(pool, {
      connect: (...args: unknown[]) => {
        if (!args.length) checkouts++;
        return (connect as (...a: unknown[]) => unknown)(...args);
      },
    });
    const body = (u: number) => ({
      next_batch: `s${u}`,
      rooms: { join: { [`!r${u}:x`]: joined([create()], [ev('m.room.message', { body: `${u}` })]) } },
    });
    await Promise.all([1, 2, 3, 4, 5].map((u) => ingest({ userId: `@u${u}:x`, deviceId: 'D' }, body(u))));
    assert.equal(checkouts, 1, 'one checkout for the five');
    assert.equal(pool.totalCount, pool.idleCount, 'the connection is back in the pool');
    await ingest({ userId: '@u6:x', deviceId: 'D' }, body(6));
    assert.equal(checkouts, 2, 'a later ingest takes one again');
  });
});

describe('prev_batch of a served timeline', () => {
  it('is read once for callers asking at the same time, and afresh after', async (t) => {
    const { pool, ingest, devices } = await setup(t);
    const msg = ev('m.room.message', { body: 'hi' });
    await ingest(devices.alice, { next_batch: 's1', rooms: { join: { '!pb:x': joined([create()], [msg]) } } });
    const { rows } = await pool.query(`SELECT nid FROM events WHERE event_id = $1`, [msg.event_id]);
    let reads = 0;
    const counting = {
      query: (...args: unknown[]) => {
        reads++;
        return (pool.query as (...a: unknown[]) => unknown)(...args);
      },
    } as unknown as typeof pool;
    const tokens = await Promise.all(Array.from({ length: 5 }, () => prevBatchFrom(counting, '!pb:x', rows[0].nid)));
    assert.deepEqual(tokens, Array(5).fill('pb'));
    assert.equal(reads, 1, 'one query for five callers');
    assert.equal(await prevBatchFrom(counting, '!pb:x', rows[0].nid), 'pb');
    assert.equal(reads, 2, 'nothing kept once answered');
  });
});

describe('accumulator with several pollers of one user', () => {
  it("keeps one order when a lagging device's events arrive after a to-device-only device's later ones", async (t) => {
    const { pool, ingest } = await setup(t);
    const d1 = { userId: '@alice:x', deviceId: 'D1' };
    const d2 = { userId: '@alice:x', deviceId: 'D2' };
    const m = Array.from({ length: 11 }, (_, i) => (i === 0 ? create() : ev('m.room.message', { body: `m${i}` })));
    const chunk = (from: number, to: number) => ({ timeline: { events: m.slice(from, to), limited: false, prev_batch: `t${from}` } });
    const room = (from: number, to: number) => ({
      next_batch: `t${to}`,
      rooms: { join: { '!o:x': { state: { events: [] }, ...chunk(from, to) } } },
    });
    await ingest(d1, room(0, 1), { initial: true });
    // D1's next /sync hangs while m1-m5 are sent; D2 logs in with a to-device-only sync, then brings m6-m10.
    await ingest(d2, { next_batch: 't6' }, { roomsOmitted: true, initial: true });
    await ingest(d2, room(6, 11));
    await ingest(d1, room(1, 6));
    const rows = (await latestTimelines(pool, [{ roomId: '!o:x', after: 0, upTo: 1e12, limit: 30 }])).get('!o:x') ?? [];
    const { events, limited } = timelineWindow(rows, 30);
    assert.deepEqual(
      events.map((r) => r.eventId),
      m.slice(6).map((e) => e.event_id),
      'm1-m5 are never appended after m10',
    );
    assert.equal(limited, true);
    assert.equal(events[0]?.prevBatch, 't6', 'paginating back from before m6 returns m5 ... m0');
  });
});

describe('retention', () => {
  it('prunes old messages beyond the kept window, never state, and only past every connection', async (t) => {
    const { pool, ingest, devices } = await setup(t);
    const { prune } = await import('../../src/store/retention.js');
    const msgs = Array.from({ length: 12 }, (_, i) => ev('m.room.message', { body: `m${i}` }));
    await ingest(devices.alice, {
      next_batch: 'a1',
      rooms: { join: { '!p:x': joined([create(), member('@alice:x', 'join')], msgs.slice(0, 6)) } },
    });
    // A connection that last saw the stream before the second batch holds those events back.
    const { rows: pos } = await pool.query(`SELECT last_value AS p FROM stream_pos`);
    await pool.query(
      `INSERT INTO connections (user_id, device_id, conn_id, confirmed_pos, confirmed_stream) VALUES ('@alice:x', 'A1', 'c', 1, $1)`,
      [pos[0].p],
    );
    await ingest(devices.alice, { next_batch: 'a2', rooms: { join: { '!p:x': joined([], msgs.slice(6)) } } });
    const held = await prune(pool, { keepPerRoom: 3, batch: 1000 });
    assert.equal(held.events, 6, 'only events before the connection position go');
    await pool.query('DELETE FROM connections');
    const freed = await prune(pool, { keepPerRoom: 3, batch: 1000 });
    assert.equal(freed.events, 3);
    const timeline = (await latestTimelines(pool, [{ roomId: '!p:x', after: 0, upTo: 1e12, limit: 100 }])).get('!p:x') ?? [];
    assert.deepEqual(timeline.map((r) => JSON.parse(r.json).content.body).reverse(), ['m9', 'm10', 'm11']);
    assert.equal(timeline.at(-1)?.gapBefore, true, 'the oldest kept event marks the pruned gap');
    const state = await currentState(pool, ['!p:x'], ALL);
    assert.equal(state.length, 2, 'state events are kept');
  });
});

describe('repeats stored together', () => {
  const ROOM = '!shared:x';
  // Five devices bring the second message after @u0:x's stored it; @u1:x has two of them.
  const devs = ['@u0:x', '@u1:x', '@u1:x', '@u2:x', '@u3:x', '@u4:x'].map((userId, i) => ({ userId, deviceId: i === 2 ? 'E' : 'D' }));
  const repeaters = devs.slice(1);
  // Device i's copy in round r: its own unread count; one-time-key counts that change in round 2 for odd i.
  const copy = (events: Ev[], i: number, round: number, ephemeral: unknown[] = []) => ({
    next_batch: `s${round}-${i}`,
    rooms: {
      join: {
        [ROOM]: joined([], events, {
          unread_notifications: { notification_count: 10 * round + i, highlight_count: 0 },
          ephemeral: { events: ephemeral },
        }),
      },
    },
    device_one_time_keys_count: { signed_curve25519: round === 2 && i % 2 === 1 ? 49 : 50 },
  });

  /** Round 1 stored one device after the other; round 2's message stored by @u0:x; returns it and its repeats' EDUs. */
  async function twoRounds(t: TestContext) {
    const s = await setup(t);
    for (const d of devs)
      await insertToken(s.pool, { tokenHash: Buffer.alloc(32, `${d.userId}/${d.deviceId}`), tokenEncrypted: Buffer.from('x'), ...d });
    const first = ev('m.room.message', { body: 'first' });
    for (const [i, d] of devs.entries()) await s.ingest(d, copy([first], i, 1), { since: null });
    const second = ev('m.room.message', { body: 'second' });
    await s.ingest(devs[0] as (typeof devs)[0], copy([second], 0, 2), { since: 's1-0' });
    const edus = [
      { type: 'm.receipt', content: { [second.event_id]: { 'm.read': { '@u0:x': { ts: 1 } } } } },
      { type: 'm.typing', content: { user_ids: ['@u0:x'] } },
    ];
    /** Every repeater's copy at once (queued together), each from its device's since. */
    const repeatAll = (which = repeaters) =>
      Promise.allSettled(which.map((d) => s.ingest(d, copy([second], devs.indexOf(d), 2, edus), { since: `s1-${devs.indexOf(d)}` })));
    const stored = async () => {
      const { rows } = await s.pool.query(
        `SELECT d.user_id, d.device_id, d.since, d.otk_counts, ur.notification_count
           FROM devices d JOIN user_rooms ur ON ur.user_id = d.user_id AND ur.room_id = $1 ORDER BY d.user_id, d.device_id`,
        [ROOM],
      );
      return new Map(
        rows.map((r) => [`${r.user_id}/${r.device_id}`, [r.since, JSON.parse(r.otk_counts).signed_curve25519, r.notification_count]]),
      );
    };
    const mark = { statements: 0, seen: new Map<BusTopic, number>() };
    const since = () => {
      mark.statements = s.statements.length;
      for (const topic of ['room.changed', 'user.rooms_changed', 'device.data', 'room.typing', 'room.receipts'] as BusTopic[])
        mark.seen.set(topic, s.messages(topic).length);
    };
    const newMessages = <T extends BusTopic>(topic: T) => s.messages(topic).slice(mark.seen.get(topic));
    const newStatements = (text: string) => s.statements.slice(mark.statements).filter((q) => q === text).length;
    since();
    return { ...s, repeatAll, stored, newMessages, newStatements };
  }
  const key = (d: (typeof devs)[0]) => `${d.userId}/${d.deviceId}`;

  it("stores many devices' repeats in one transaction: each its since, counts and keys, announced as one by one", async (t) => {
    const { repeatAll, stored, newMessages, newStatements } = await twoRounds(t);
    const results = await repeatAll();
    assert.deepEqual(
      results.map((r) => r.status),
      repeaters.map(() => 'fulfilled'),
    );
    // The first repeat may start alone (the queue was idle); the others queued behind it go together.
    const transactions = newStatements('BEGIN');
    assert.ok(transactions <= 2, `${transactions} transactions for ${repeaters.length} repeats`);
    const rows = await stored();
    for (const [i, d] of devs.entries()) {
      // @u1:x's two devices store one row of counts: the later copy's.
      const count = d.userId === '@u1:x' ? 22 : 20 + i;
      assert.deepEqual(rows.get(key(d)), [`s2-${i}`, i % 2 === 1 ? 49 : 50, count], key(d));
    }
    // What one ingest after the other announces: per repeat its user's counts, its receipts and
    // typing, its device's keys when they changed; positions in arrival order; the room itself once, earlier.
    assert.deepEqual(newMessages('room.changed'), []);
    const users = newMessages('user.rooms_changed');
    assert.deepEqual(
      users.map((m) => [m.userId, m.roomIds]),
      repeaters.map((d) => [d.userId, [ROOM]]),
    );
    const positions = users.map((m) => m.pos);
    assert.deepEqual(
      positions,
      [...new Set(positions)].sort((a, b) => a - b),
      'one position each, in order',
    );
    assert.deepEqual(
      newMessages('device.data'),
      repeaters
        .map((d, j) => ({ ...d, pos: positions[j], toDevice: 0, deviceLists: false, keys: true }))
        .filter((_, j) => (j + 1) % 2 === 1),
    );
    assert.deepEqual(
      newMessages('room.receipts'),
      positions.map((pos) => ({ roomId: ROOM, pos })),
    );
    assert.deepEqual(
      newMessages('room.typing'),
      repeaters.map(() => ({ roomId: ROOM, userIds: ['@u0:x'] })),
    );
  });

  it('batches the copies that arrive together with the first, once it is stored', async (t) => {
    const { ingest, pool, newStatements, newMessages } = await twoRounds(t);
    for (const d of devs) await pool.query('UPDATE devices SET since = NULL WHERE user_id = $1 AND device_id = $2', [d.userId, d.deviceId]);
    const third = ev('m.room.message', { body: 'third' });
    // Every poller's copy at once: none of them is a repeat yet when it is queued.
    const results = await Promise.allSettled(devs.map((d, i) => ingest(d, copy([third], i, 3), { since: null })));
    assert.deepEqual(
      results.map((r) => r.status),
      devs.map(() => 'fulfilled'),
    );
    const transactions = newStatements('BEGIN');
    assert.ok(transactions <= 3, `${transactions} transactions for ${devs.length} copies`);
    assert.equal(newMessages('room.changed').length, 1, 'the message announced once');
    assert.equal(newMessages('user.rooms_changed').length, devs.length);
  });

  it('leaves out of the batch a device whose since moved: it gets SinceMoved, the others are stored', async (t) => {
    const { pool, repeatAll, stored, newMessages, newStatements } = await twoRounds(t);
    // Another process polled @u2:x's device on meanwhile.
    await pool.query(`UPDATE devices SET since = 'elsewhere' WHERE user_id = '@u2:x'`);
    const results = await repeatAll();
    assert.ok(newStatements('BEGIN') <= 2);
    const moved = results[2];
    assert.equal(moved?.status, 'rejected');
    assert.equal((moved as PromiseRejectedResult).reason.name, 'SinceMoved');
    assert.equal((moved as PromiseRejectedResult).reason.current, 'elsewhere');
    assert.deepEqual(
      results.filter((_, j) => j !== 2).map((r) => r.status),
      ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'],
    );
    const rows = await stored();
    assert.deepEqual(rows.get('@u2:x/D'), ['elsewhere', 50, 13], 'nothing of its response stored');
    assert.deepEqual(rows.get('@u4:x/D'), ['s2-5', 49, 25]);
    assert.deepEqual(
      newMessages('user.rooms_changed').map((m) => m.userId),
      ['@u1:x', '@u1:x', '@u3:x', '@u4:x'],
    );
    assert.ok(!newMessages('device.data').some((m) => m.userId === '@u2:x'));
  });

  it("rolls back the whole batch when a statement fails, then stores the others alone; the failed one's retry is stored", async (t) => {
    const { pool, repeatAll, stored, newMessages, newStatements } = await twoRounds(t);
    // @u4:x's new key counts are refused (a fault of its own data): the batch's key statement fails.
    await pool.query(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$`);
    await pool.query(
      `CREATE TRIGGER refuse BEFORE UPDATE OF otk_counts ON devices FOR EACH ROW
         WHEN (NEW.user_id = '@u4:x' AND NEW.otk_counts IS DISTINCT FROM OLD.otk_counts) EXECUTE FUNCTION refuse()`,
    );
    const results = await repeatAll();
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'rejected'],
    );
    assert.equal(newStatements('ROLLBACK'), 2, "the batch's transaction, then @u4:x's own");
    const rows = await stored();
    assert.deepEqual(rows.get('@u4:x/D'), ['s1-5', 50, 15], 'nothing of it stored');
    assert.deepEqual(rows.get('@u3:x/D'), ['s2-4', 50, 24]);
    assert.ok(!newMessages('user.rooms_changed').some((m) => m.userId === '@u4:x'), 'nothing announced of it');
    // Its poller fetches the same response again and stores it.
    await pool.query('DROP TRIGGER refuse ON devices');
    const [retry] = await repeatAll(repeaters.slice(4));
    assert.equal(retry?.status, 'fulfilled');
    assert.deepEqual((await stored()).get('@u4:x/D'), ['s2-5', 49, 25]);
  });

  it("stores nothing of any repeat when the batch's statement fails for all, and each is stored when fetched again", async (t) => {
    const { pool, repeatAll, stored, newMessages } = await twoRounds(t);
    await pool.query(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$`);
    await pool.query(
      `CREATE TRIGGER refuse BEFORE UPDATE OF since ON devices FOR EACH ROW WHEN (NEW.since LIKE 's2-%') EXECUTE FUNCTION refuse()`,
    );
    const before = await stored();
    const results = await repeatAll();
    assert.deepEqual(
      results.map((r) => r.status),
      repeaters.map(() => 'rejected'),
    );
    assert.deepEqual(await stored(), before, 'no since, count or key stored');
    assert.deepEqual(newMessages('user.rooms_changed'), []);
    await pool.query('DROP TRIGGER refuse ON devices');
    const again = await repeatAll();
    assert.deepEqual(
      again.map((r) => r.status),
      repeaters.map(() => 'fulfilled'),
    );
    const rows = await stored();
    for (const d of repeaters) assert.equal(rows.get(key(d))?.[0], `s2-${devs.indexOf(d)}`);
  });
});
