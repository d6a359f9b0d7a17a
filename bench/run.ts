// `npm run bench -- [ingest|history|msc4186|fanout|load|notify|tokens|server]...`: figures, not pass/fail. Every figure is printed with a
// ratio to a baseline measured in the same run on the same machine (a bare PostgreSQL round trip
// or a bare bulk insert), because absolute numbers on a shared machine mean little.
// `server` runs against a real homeserver, side by side with its native endpoint, when
// SYNCV3_BENCH_SERVER is set (`local`, or a URL with SYNCV3_BENCH_REGISTRATION_SECRET); its
// knobs (BENCH_SERVER_USERS, _MESSAGES, _INTERVAL_MS, _PHASES) are described in bench/server.ts.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { monitorEventLoopDelay, PerformanceObserver, performance } from 'node:perf_hooks';
import pg from 'pg';
import { type Bus, createInProcessBus } from '../src/bus/bus.js';
import { createClusterBus } from '../src/bus/cluster-bus.js';
import { createAccumulator } from '../src/ingest/accumulator.js';
import { historyFetcher } from '../src/poller/backfill.js';
import { listen, notify, notifyInTransaction } from '../src/store/bus-channel.js';
import { createPool, type Pool, type Queryable } from '../src/store/db.js';
import { insertToken } from '../src/store/devices-table.js';
import { loadMigrations, migrate } from '../src/store/migrate.js';
import { createSyncService } from '../src/sync/create-engine.js';
import type { Device } from '../src/sync/engine.js';
import { toJson } from '../src/sync/json.js';
import type { SyncRequest } from '../src/sync/types.js';
import { createLogger } from '../src/telemetry/logger.js';
import { createHomeserverClient } from '../src/upstream/homeserver-client.js';
import { parseSyncResponse } from '../src/upstream/sync-response.js';
import { type RoomHistory, startFakeHomeserver } from '../test/support/fake-homeserver.js';
import { freePort } from '../test/support/ports.js';
import { waitFor } from '../test/support/processes.js';
import { startTestPostgres } from '../test/support/test-postgres.js';
import { ELEMENT_X_REQUIRED_STATE, fmt, ms, pct } from './figures.js';
import { eventCount, fanOutInitialSync, initialSync, liveMessage, roomId, userId } from './generate.js';
import { benchServer } from './server.js';

const logger = createLogger({ level: 'warn', pretty: false });

/**
 * BENCH_DB_PREFIX: prepended to every database name, so that runs sharing one PostgreSQL server
 * (two branches measured side by side) do not drop each other's databases.
 */
const DB_PREFIX = process.env.BENCH_DB_PREFIX ?? '';

/** `template`: a database to copy instead of starting empty (see BENCH_FANOUT_TEMPLATE). */
async function freshDatabase(serverUrl: string, baseName: string, template?: string): Promise<Pool> {
  const name = `${DB_PREFIX}${baseName}`;
  await adminQuery(serverUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await adminQuery(serverUrl, template ? `CREATE DATABASE ${name} TEMPLATE ${template}` : `CREATE DATABASE ${name}`);
  const pool = openDatabase(serverUrl, name);
  if (process.env.BENCH_TX) transactionsOf.set(pool, timeTransactions(pool));
  // BENCH_EXPLAIN_MS: statements slower than this write their plan, with actual times and
  // buffers, to the PostgreSQL server's log (auto_explain, loaded per session: needs a superuser).
  if (process.env.BENCH_EXPLAIN_MS) {
    const settings = [
      `LOAD 'auto_explain'`,
      `SET auto_explain.log_min_duration = ${Number(process.env.BENCH_EXPLAIN_MS)}`,
      'SET auto_explain.log_analyze = on',
      'SET auto_explain.log_buffers = on',
      `SET log_min_messages = 'log'`,
    ].join('; ');
    pool.on('connect', (client) => {
      client.query(settings).catch((err: Error) => logger.warn({ err: err.message }, 'auto_explain not set'));
    });
  }
  await migrate(pool, await loadMigrations());
  return pool;
}

function openDatabase(serverUrl: string, name: string): Pool {
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return createPool({ connectionString: url.href, max: 10, idleTimeoutMs: 10_000 }, logger);
}

async function adminQuery(serverUrl: string, sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    return await admin.query(sql, params);
  } finally {
    await admin.end();
  }
}

async function databaseExists(serverUrl: string, name: string): Promise<boolean> {
  return (await adminQuery(serverUrl, 'SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount === 1;
}

/**
 * Counts the SQL statements a pool runs (the pool's own query and its clients', promise-style
 * only). BENCH_SQL=1 also prints, at the end, time and parameter bytes per statement.
 */
const sqlStats = new Map<string, { n: number; ms: number; bytes: number }>();
function countQueries(pool: Pool): { readonly n: number } {
  const counter = { n: 0 };
  const detail = Boolean(process.env.BENCH_SQL);
  const wrap = (target: { query: unknown }) => {
    const original = (target.query as (...args: unknown[]) => unknown).bind(target);
    target.query = (...args: unknown[]) => {
      if (typeof args.at(-1) === 'function') return original(...args);
      counter.n++;
      if (!detail) return original(...args);
      const text = String(args[0]).replace(/\s+/g, ' ').slice(0, 90);
      const bytes = JSON.stringify(args[1] ?? []).length;
      const t0 = performance.now();
      const done = () => {
        const st = sqlStats.get(text) ?? { n: 0, ms: 0, bytes: 0 };
        sqlStats.set(text, { n: st.n + 1, ms: st.ms + ms(t0), bytes: st.bytes + bytes });
      };
      const p = original(...args) as Promise<unknown>;
      p.then(done, done);
      return p;
    };
  };
  wrap(pool);
  pool.on('connect', (client) => wrap(client));
  return counter;
}

/**
 * BENCH_TX=1: times each transaction of a pool (BEGIN to COMMIT on one client) and its
 * statements, to find what makes one transaction slower than the others.
 */
interface TxTiming {
  started: number;
  ms: number;
  statements: { text: string; ms: number }[];
}
const transactionsOf = new Map<Pool, TxTiming[]>();
function timeTransactions(pool: Pool): TxTiming[] {
  const done: TxTiming[] = [];
  pool.on('connect', (client) => {
    const original = client.query.bind(client) as (...args: unknown[]) => unknown;
    let open: TxTiming | undefined;
    (client as { query: unknown }).query = (...args: unknown[]) => {
      if (typeof args.at(-1) === 'function') return original(...args);
      const text = String(args[0]).replace(/\s+/g, ' ').slice(0, 100);
      const t0 = performance.now();
      if (text === 'BEGIN') open = { started: t0, ms: 0, statements: [] };
      const p = original(...args) as Promise<unknown>;
      const tx = open;
      const finish = () => {
        if (!tx) return;
        tx.statements.push({ text, ms: ms(t0) });
        if (text === 'COMMIT' || text === 'ROLLBACK') {
          tx.ms = performance.now() - tx.started;
          done.push(tx);
          open = undefined;
        }
      };
      p.then(finish, finish);
      return p;
    };
  });
  return done;
}

function printTransactions(label: string, txs: TxTiming[], since: number) {
  const mine = txs.filter((t) => t.started >= since);
  if (!mine.length) return;
  console.log(
    `  transactions of ${label}: ${mine.length}, p50 ${fmt(
      pct(
        mine.map((t) => t.ms),
        50,
      ),
    )} ms; the slowest, and the first few:`,
  );
  const slowest = [...mine].sort((a, b) => b.ms - a.ms).slice(0, 4);
  for (const t of [...new Set([...mine.slice(0, 3), ...slowest])]) {
    console.log(`    #${mine.indexOf(t)} at +${fmt(t.started - since)} ms: ${fmt(t.ms)} ms, ${t.statements.length} statements`);
    for (const st of [...t.statements].sort((a, b) => b.ms - a.ms).slice(0, 6))
      console.log(`      ${fmt(st.ms).padStart(7)} ms  ${st.text}`);
  }
}

/** (c)'s cost per copy of the event: ingest time, and with BENCH_TX the transactions and statements behind it. */
function printRepeats(users: number, ingestAll: number[], txs: TxTiming[] | undefined, since: number) {
  if (!ingestAll.length) return;
  const copies = users * ingestAll.length;
  const total = ingestAll.reduce((a, b) => a + b, 0);
  let line = `  (c) per copy: ${fmt((total / copies) * 1000)} µs of ingest wall time (${copies} copies)`;
  const mine = txs?.filter((t) => t.started >= since);
  if (mine?.length) {
    const statements = mine.reduce((n, t) => n + t.statements.length, 0);
    const txMs = mine.reduce((n, t) => n + t.ms, 0);
    line += `; ${mine.length} transactions, ${fmt(statements / copies)} statements and ${fmt((txMs / copies) * 1000)} µs of transaction time per copy`;
  }
  console.log(line);
}

function printSqlStats(phase: string) {
  if (!sqlStats.size) return;
  console.log(`  SQL of ${phase} by total time (calls, ms, parameter KiB):`);
  for (const [text, st] of [...sqlStats].sort((a, b) => b[1].ms - a[1].ms).slice(0, 15))
    console.log(`    ${String(st.n).padStart(6)} ${fmt(st.ms).padStart(7)} ms ${fmt(st.bytes / 1024).padStart(8)} KiB  ${text}`);
  sqlStats.clear();
}

/** A fresh database's URL, migrated by whoever opens it first. */
async function freshDatabaseUrl(serverUrl: string, name: string): Promise<string> {
  const pool = await freshDatabase(serverUrl, name);
  await pool.end();
  const url = new URL(serverUrl);
  url.pathname = `/${DB_PREFIX}${name}`;
  return url.href;
}

async function roundTripMs(pool: Pool): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < 200; i++) {
    const t0 = performance.now();
    await pool.query('SELECT 1');
    xs.push(ms(t0));
  }
  return pct(xs, 50);
}

async function device(pool: Pool, user: string) {
  const d = { userId: user, deviceId: 'BENCH' };
  await insertToken(pool, { tokenHash: Buffer.alloc(32, user), tokenEncrypted: Buffer.from('x'), ...d });
  return d;
}

function parse(body: unknown) {
  const parsed = parseSyncResponse(body);
  if ('error' in parsed) throw new Error(parsed.error);
  return parsed.response;
}

/** The cost of writing N event-sized rows with one bulk insert: what the database alone needs. */
async function bulkInsertBaseline(pool: Pool, rows: number): Promise<number> {
  await pool.query('CREATE TEMP TABLE IF NOT EXISTS bench_baseline (id text, json text)');
  const ids = Array.from({ length: rows }, (_, i) => `$b${i}`);
  const json = ids.map((id) => JSON.stringify({ event_id: id, type: 'm.room.message', content: { body: 'x'.repeat(40) } }));
  const t0 = performance.now();
  await pool.query('INSERT INTO bench_baseline SELECT * FROM unnest($1::text[], $2::text[])', [ids, json]);
  return ms(t0);
}

async function benchIngest(serverUrl: string) {
  console.log('\n== ingest ==');
  for (const rooms of [1_000, 10_000]) {
    const pool = await freshDatabase(serverUrl, `syncv3_bench_ingest_${rooms}`);
    const acc = createAccumulator({ pool, bus: createInProcessBus(logger), logger });
    const d = await device(pool, userId(0));
    const body = initialSync(
      Array.from({ length: rooms }, (_, i) => ({ index: i, members: [userId(0), userId(1), userId(2), userId(3)] })),
      1,
    );
    const events = eventCount(body);
    const t0 = performance.now();
    await acc.ingest(d, parse(JSON.parse(JSON.stringify(body))));
    const took = ms(t0);
    const baseline = await bulkInsertBaseline(pool, events);
    console.log(
      `initial sync, ${rooms} rooms, ${events} events: ${fmt(took / 1000)} s, ${fmt(events / (took / 1000))} events/s ` +
        `(bare bulk insert of as many rows: ${fmt(baseline)} ms; ratio ${fmt(took / baseline)}x)`,
    );
    await pool.end();
  }

  // 100 users sharing 1,000 rooms (each user in 100 rooms, each room with 10 of them): dedup path.
  const pool = await freshDatabase(serverUrl, 'syncv3_bench_ingest_shared');
  const bus = createInProcessBus(logger);
  const acc = createAccumulator({ pool, bus, logger });
  let total = 0;
  const t0 = performance.now();
  for (let u = 0; u < 100; u++) {
    const mine = Array.from({ length: 100 }, (_, k) => k * 10 + (u % 10));
    const body = initialSync(
      mine.map((index) => ({ index, members: Array.from({ length: 10 }, (_, m) => userId((index % 10) + m * 10)) })),
      1,
    );
    total += eventCount(body);
    await acc.ingest(await device(pool, userId(u)), parse(body));
  }
  const took = ms(t0);
  console.log(`100 users sharing 1000 rooms: ${total} events seen in ${fmt(took / 1000)} s, ${fmt(total / (took / 1000))} events/s`);

  // Poll-to-bus: from the upstream body in hand to the room.changed message.
  let published = 0;
  bus.subscribe('room.changed', () => {
    published = performance.now();
  });
  const d = await device(pool, userId(0));
  const lat: number[] = [];
  for (let i = 0; i < 300; i++) {
    const body = liveMessage((i % 100) * 10, userId(0), `live ${i}`);
    const t1 = performance.now();
    await acc.ingest(d, parse(body));
    lat.push(published - t1);
  }
  const rt = await roundTripMs(pool);
  console.log(
    `poll-to-bus latency: p50 ${fmt(pct(lat, 50))} ms, p99 ${fmt(pct(lat, 99))} ms ` +
      `(PostgreSQL round trip p50 ${fmt(rt)} ms; p50 = ${fmt(pct(lat, 50) / rt)} round trips)`,
  );
  await pool.end();
}

function roomListRequest(range: [number, number], pos: string | undefined, timeoutMs = 0): SyncRequest {
  return {
    protocol: 'msc4186',
    connId: 'room-list',
    pos,
    timeoutMs,
    lists: new Map([['all_rooms', { ranges: [range], timelineLimit: 1, requiredState: ELEMENT_X_REQUIRED_STATE, filters: {} }]]),
    roomSubscriptions: new Map(),
    unsubscribeRooms: [],
    extensions: {
      accountData: { lists: undefined, rooms: undefined },
      receipts: { lists: undefined, rooms: ['*'] },
      typing: { lists: undefined, rooms: undefined },
    },
  };
}

/**
 * BENCH_CPU_PROFILE=dir: one .cpuprofile per measured phase (open in Chrome DevTools), sampled
 * every BENCH_CPU_PROFILE_US microseconds (default 100: a fan-out's answers take well under a
 * millisecond each, so V8's default of 1,000 gives too few samples to tell them apart).
 * BENCH_HEAP_PROFILE=dir: one .heapprofile per phase, V8's sampling of allocations (every 8 KiB
 * allocated on average, kept even when collected since): where the garbage collector's work
 * comes from.
 */
async function profiled<T>(label: string, fn: () => Promise<T>): Promise<T> {
  const cpuDir = process.env.BENCH_CPU_PROFILE;
  const heapDir = process.env.BENCH_HEAP_PROFILE;
  if (!cpuDir && !heapDir) return fn();
  const session = new Session();
  session.connect();
  if (cpuDir) {
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: Number(process.env.BENCH_CPU_PROFILE_US ?? 100) });
    await session.post('Profiler.start');
  }
  if (heapDir)
    await session.post('HeapProfiler.startSampling', {
      samplingInterval: 8192,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  try {
    return await fn();
  } finally {
    if (cpuDir) {
      const { profile } = await session.post('Profiler.stop');
      writeFileSync(`${cpuDir}/${label}.cpuprofile`, JSON.stringify(profile));
    }
    if (heapDir) {
      const { profile } = await session.post('HeapProfiler.stopSampling');
      writeFileSync(`${heapDir}/${label}.heapprofile`, JSON.stringify(profile));
    }
    session.disconnect();
  }
}

/** BENCH_ROOMS=10000 runs the msc4186 scenario at one size only (e.g. under --cpu-prof). */
const ROOM_COUNTS = process.env.BENCH_ROOMS ? process.env.BENCH_ROOMS.split(',').map(Number) : [1_000, 10_000];

async function benchMsc4186(serverUrl: string) {
  console.log('\n== msc4186 (Element X room-list connection) ==');
  for (const rooms of ROOM_COUNTS) {
    const pool = await freshDatabase(serverUrl, `syncv3_bench_msc4186_${rooms}`);
    const bus = createInProcessBus(logger);
    const acc = createAccumulator({ pool, bus, logger });
    const d = await device(pool, userId(0));
    await acc.ingest(
      d,
      parse(
        initialSync(
          Array.from({ length: rooms }, (_, i) => ({ index: i, members: [userId(0), userId(1), userId(2)] })),
          1,
        ),
      ),
    );
    // As autovacuum does within a minute of a bulk load: without statistics the planner scans
    // whole tables for window-sized batches (and development servers often run autovacuum off).
    if (!process.env.BENCH_NO_ANALYZE) await pool.query('ANALYZE');
    const { engine } = await createSyncService({ pool, bus, logger }, { maxConnectionsPerDevice: 10, maxConnectionsInMemory: 1000 });
    const signal = new AbortController().signal;
    const rt = await roundTripMs(pool);
    const queries = countQueries(pool);
    global.gc?.();
    const heapBefore = process.memoryUsage().heapUsed;

    let t0 = performance.now();
    let q0 = queries.n;
    let res = await engine.sync(d, roomListRequest([0, 19], undefined), signal);
    toJson(res);
    const cold = ms(t0);
    const coldQueries = queries.n - q0;
    global.gc?.();
    const heapCaches = process.memoryUsage().heapUsed - heapBefore;
    const warm: number[] = [];
    q0 = queries.n;
    await profiled(`msc4186-${rooms}-warm`, async () => {
      for (let i = 0; i < 20; i++) {
        t0 = performance.now();
        toJson(await engine.sync(d, roomListRequest([0, 19], undefined), signal));
        warm.push(ms(t0));
      }
    });
    const warmQueries = (queries.n - q0) / 20;
    printSqlStats('warm first windows');
    // Growing by 100 with timeout 0 up to the whole list, as Element X does.
    t0 = performance.now();
    q0 = queries.n;
    let steps = 1;
    await profiled(`msc4186-${rooms}-grow`, async () => {
      res = await engine.sync(d, roomListRequest([0, 19], undefined), signal);
      for (let end = 99; ; end += 100) {
        const last = Math.min(end, rooms - 1);
        res = await engine.sync(d, roomListRequest([0, last], res.pos), signal);
        toJson(res);
        steps++;
        if (last === rooms - 1) break;
      }
    });
    const whole = ms(t0);
    printSqlStats('growing');
    const wholeQueries = queries.n - q0;

    // Live: a long-poll, woken by an ingested message; measured from the upstream body in hand
    // (total) and from the end of its ingest (what serving adds to the upstream's own delivery).
    const live = async (range: [number, number]) => {
      const total: number[] = [];
      const over: number[] = [];
      const q = queries.n;
      let pos = (await engine.sync(d, roomListRequest(range, undefined), signal)).pos;
      for (let i = 0; i < 50; i++) {
        const waiting = engine.sync(d, roomListRequest(range, pos, 30_000), signal);
        await new Promise((r) => setTimeout(r, 5));
        const t1 = performance.now();
        await acc.ingest(d, parse(liveMessage((i * 37) % rooms, userId(1), `live ${i}`)));
        const ingested = performance.now();
        const r = await waiting;
        toJson(r);
        total.push(ms(t1));
        over.push(performance.now() - ingested);
        pos = r.pos;
        if (!Object.keys(r.rooms).length) throw new Error('live message not delivered');
      }
      return { total, over, queries: (queries.n - q) / 51 };
    };
    printSqlStats('setup');
    const liveAll = await profiled(`msc4186-${rooms}-live-all`, () => live([0, rooms - 1]));
    printSqlStats('live');
    const liveTop = await profiled(`msc4186-${rooms}-live-top`, () => live([0, 19]));
    console.log(`user in ${rooms} rooms (PostgreSQL round trip p50 ${fmt(rt)} ms):`);
    console.log(`  first window [0,19], cold caches: ${fmt(cold)} ms (${fmt(cold / rt)} round trips; ${coldQueries} queries)`);
    console.log(
      `  first window [0,19], warm: p50 ${fmt(pct(warm, 50))} ms, p99 ${fmt(pct(warm, 99))} ms (${fmt(pct(warm, 50) / rt)} round trips; ${fmt(warmQueries)} queries)`,
    );
    console.log(
      `  whole list by growing 100 at a time: ${fmt(whole / 1000)} s (${steps} requests, ${fmt(wholeQueries / steps)} queries each)`,
    );
    for (const [label, l] of [
      [`whole list [0,${rooms - 1}]`, liveAll],
      ['window [0,19]', liveTop],
    ] as const) {
      console.log(
        `  live, ${label} (ingest of the upstream event -> long-poll answered): p50 ${fmt(pct(l.total, 50))} ms, p99 ${fmt(pct(l.total, 99))} ms; ` +
          `after the ingest: p50 ${fmt(pct(l.over, 50))} ms, p99 ${fmt(pct(l.over, 99))} ms (${fmt(l.queries)} queries per response)`,
      );
    }
    if (global.gc) console.log(`  cache memory: ${fmt(heapCaches / rooms / 1024)} KiB per room (${fmt(heapCaches / 1024 / 1024)} MiB)`);
    await pool.end();
  }
  await benchSharedMemory(serverUrl);
}

/** Cache memory of several users sharing rooms: per room (shared metadata) and per user–room. */
async function benchSharedMemory(serverUrl: string) {
  if (!global.gc) return;
  const users = 10;
  const rooms = 1_000;
  const pool = await freshDatabase(serverUrl, 'syncv3_bench_msc4186_shared');
  const bus = createInProcessBus(logger);
  const acc = createAccumulator({ pool, bus, logger });
  const members = Array.from({ length: users }, (_, u) => userId(u));
  const devices = [];
  for (let u = 0; u < users; u++) {
    const d = await device(pool, userId(u));
    devices.push(d);
    await acc.ingest(
      d,
      parse(
        initialSync(
          Array.from({ length: rooms }, (_, i) => ({ index: i, members })),
          1,
        ),
      ),
    );
  }
  const { engine } = await createSyncService({ pool, bus, logger }, { maxConnectionsPerDevice: 10, maxConnectionsInMemory: 1000 });
  const signal = new AbortController().signal;
  // The earlier scenarios' heaps (10,000 rooms) are still being freed: collect until the heap
  // stops shrinking, or it shrinks under the measurement and the figures come out negative.
  const settledHeap = async () => {
    let last = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 10; i++) {
      (global.gc as () => void)();
      await new Promise((r) => setTimeout(r, 20));
      const now = process.memoryUsage().heapUsed;
      if (now >= last * 0.999) return now;
      last = now;
    }
    return last;
  };
  const before = await settledHeap();
  const first = devices[0] as (typeof devices)[number];
  await engine.sync(first, roomListRequest([0, 19], undefined), signal);
  const one = (await settledHeap()) - before;
  for (const d of devices.slice(1)) await engine.sync(d, roomListRequest([0, 19], undefined), signal);
  const all = (await settledHeap()) - before;
  const perUserRoom = (all - one) / ((users - 1) * rooms);
  console.log(
    `${users} users sharing ${rooms} rooms: cache memory ${fmt(one / rooms / 1024)} KiB per room with one user, ` +
      `${fmt(perUserRoom / 1024)} KiB per further user–room (${fmt(all / 1024 / 1024)} MiB in all)`,
  );
  await pool.end();
}

/**
 * Tells when `users` long-polls (one per user) have all said they wait (the engine's onWait
 * hook): `onWait` goes to the engine, `reset` before starting a round of long-polls, and
 * `everyone` resolves once each user's long-poll has parked since.
 */
function parkedLongPolls(users: number) {
  let parked = new Set<string>();
  let all: (() => void) | undefined;
  const waiters = new Map<string, (() => void)[]>();
  return {
    onWait: (d: { userId: string }) => {
      parked.add(d.userId);
      for (const resolve of waiters.get(d.userId) ?? []) resolve();
      waiters.delete(d.userId);
      if (parked.size === users) all?.();
    },
    reset: () => {
      parked = new Set();
    },
    everyone: () =>
      new Promise<void>((resolve) => {
        all = resolve;
        if (parked.size === users) resolve();
      }),
    /** Resolves when `userId`'s next long-poll says it waits. */
    next: (userId: string) =>
      new Promise<void>((resolve) => {
        waiters.set(userId, [...(waiters.get(userId) ?? []), resolve]);
      }),
  };
}

/**
 * Ingest under load (issue 16 (b) ingest half and (c)): users each with a connection
 * long-polling (BENCH_LOAD_ROOMS rooms each, default 20, drawn from a pool shared by everyone,
 * plus one room shared by all).
 * (c) every user's poller brings the same event in the shared room at once: from the first
 *     copy handed to ingest to each long-poll answered, p50/p99/max over 5 messages;
 * (b) with 1,000 of them waiting, another user's 10,000-room initial sync is ingested: event-
 *     loop delay (monitorEventLoopDelay) p99/max during it, and live events for waiting users
 *     sent during it (one every 50 ms): ingest handed the event -> its long-poll answered.
 */
async function benchIngestLoad(serverUrl: string) {
  console.log('\n== ingest under load (many waiting connections) ==');
  const perUser = Number(process.env.BENCH_LOAD_ROOMS ?? 20);
  const parts = process.env.BENCH_LOAD_PARTS ?? 'b,c';
  // BENCH_LOAD_BIG_ROOMS: the size of (b)'s big initial sync (smaller ones to iterate on).
  const bigRooms = Number(process.env.BENCH_LOAD_BIG_ROOMS ?? 10_000);
  const shared = 100_000;
  // A room of each user that no other user's poller brought: its live events wake that user alone.
  const privateRoom = (u: number) => 300_000 + u;
  const request = (pos: string | undefined, timeoutMs: number) => ({
    ...roomListRequest([0, perUser + 1], pos, timeoutMs),
    connId: 'load',
  });
  for (const users of (process.env.BENCH_LOAD_USERS ?? '200,1000').split(',').map(Number)) {
    // Ends the long-polls still waiting when a size is done.
    const stop = new AbortController();
    const signal = stop.signal;
    const pool = await freshDatabase(serverUrl, `syncv3_bench_load_${users}`);
    const bus = createInProcessBus(logger);
    // BENCH_LOAD_CHUNK_EVENTS: the accumulator's part size for big responses (its default when unset).
    const chunkEvents = process.env.BENCH_LOAD_CHUNK_EVENTS ? Number(process.env.BENCH_LOAD_CHUNK_EVENTS) : undefined;
    // BENCH_LOAD_REPEAT_BATCH: the accumulator's batch of repeats (its default when unset).
    const repeatBatch = process.env.BENCH_LOAD_REPEAT_BATCH ? Number(process.env.BENCH_LOAD_REPEAT_BATCH) : undefined;
    const acc = createAccumulator({ pool, bus, logger, chunkEvents, repeatBatch });
    const everyone = Array.from({ length: users }, (_, u) => userId(u));
    const devices: Device[] = [];
    // Each device's stored `since`: (c)'s copies are ingested from it, as pollers do (the arbitration between pollers).
    const since = new Map<number, string>();
    const t0 = performance.now();
    for (let u = 0; u < users; u++) {
      const d = await device(pool, userId(u));
      devices.push(d);
      const mine = Array.from({ length: perUser }, (_, k) => ({
        index: (u * 7 + k * 13) % 2_000,
        members: [userId(u), userId((u + 1) % users)],
      }));
      const own = { index: privateRoom(u), members: [userId(u), userId((u + 1) % users)] };
      const first = parse(initialSync([...mine, own, { index: shared, members: everyone.slice(0, 8) }], 1));
      await acc.ingest(d, first, { initial: true });
      since.set(u, first.next_batch);
    }
    await pool.query('ANALYZE');
    const setup = ms(t0);
    const parked = parkedLongPolls(users);
    const { engine } = await createSyncService(
      { pool, bus, logger, onWait: parked.onWait },
      { maxConnectionsPerDevice: 10, maxConnectionsInMemory: users * 2 },
    );
    const pos = new Map<number, string>();
    for (let u = 0; u < users; u++) pos.set(u, (await engine.sync(devices[u] as Device, request(undefined, 0), signal)).pos);
    const waitFor = (u: number) =>
      engine.sync(devices[u] as Device, request(pos.get(u), 300_000), signal).then(
        (r) => {
          pos.set(u, r.pos);
          return { at: performance.now() };
        },
        () => ({ at: Number.NaN }),
      );
    // Every user's long-poll, once each has said it waits (they wait up to 5 minutes: a timed-out
    // long-poll would count as answered).
    // A long-poll may answer before it ever waits (what it finds new since the first response);
    // it is then made again, until every user's has said it waits.
    let early = 0;
    const parkedWait = async (u: number) => {
      for (;;) {
        const isParked = parked.next(userId(u)).then(() => true);
        const answer = waitFor(u);
        if (await Promise.race([isParked, answer.then(() => false)])) return { answer };
        early++;
      }
    };
    const everyoneWaiting = async () => (await Promise.all(everyone.map((_, u) => parkedWait(u)))).map((w) => w.answer);

    // (c) every poller brings the same event.
    const answered: number[] = [];
    const ingestAll: number[] = [];
    const cStarted = performance.now();
    for (let m = 0; parts.includes('c') && m < 5; m++) {
      const waiting = await everyoneWaiting();
      const message = liveMessage(shared, userId(0), `to all ${m}`);
      const t1 = performance.now();
      await Promise.all(
        devices.map((d, u) => {
          const body = structuredClone(message) as { rooms: { join: Record<string, Record<string, unknown>> } };
          (body.rooms.join[roomId(shared)] as Record<string, unknown>).unread_notifications = {
            notification_count: m + (u % 3),
            highlight_count: 0,
          };
          // As Synapse sends with every response: the same key counts, a change for one device in ten.
          Object.assign(body, { device_one_time_keys_count: { signed_curve25519: u % 10 === m ? 49 : 50 } });
          const response = parse(body);
          return acc.ingest(d, response, { since: since.get(u) }).then(() => since.set(u, response.next_batch));
        }),
      );
      ingestAll.push(ms(t1));
      for (const { at } of await Promise.all(waiting)) answered.push(at - t1);
    }
    console.log(`${users} users, ${perUser + 2} rooms each (setup ${fmt(setup / 1000)} s; ${early} long-polls answered before waiting):`);
    if (answered.length)
      console.log(
        `  (c) one event brought by all ${users} pollers -> every long-poll answered: p50 ${fmt(pct(answered, 50))} ms, ` +
          `p99 ${fmt(pct(answered, 99))} ms, max ${fmt(Math.max(...answered))} ms; ingest of all copies p50 ${fmt(pct(ingestAll, 50))} ms`,
      );
    printRepeats(users, ingestAll, transactionsOf.get(pool), cStarted);

    // (b) runs at 1,000 users and up, or at any size when BENCH_LOAD_PARTS asks for it.
    if ((users >= 1_000 || process.env.BENCH_LOAD_PARTS) && parts.includes('b')) {
      // (b) a big initial sync while everyone waits, with live events for waiting users meanwhile.
      const big = await device(pool, 'big-account');
      const body = parse(
        initialSync(
          Array.from({ length: bigRooms }, (_, i) => ({ index: 200_000 + i, members: ['big-account', userId(1), userId(2)] })),
          1,
        ),
      );
      // Each user long-polls again as soon as answered; a live event counts as answered at the
      // first answer to its user that carries its room (the user's own, shared with no one who polls).
      const expecting = new Map<number, { roomId: string; answered: (at: number) => void }[]>();
      const polling = everyone.map(async (_, u) => {
        for (;;) {
          const r = await engine.sync(devices[u] as Device, request(pos.get(u), 300_000), signal).catch(() => undefined);
          if (!r) return;
          const at = performance.now();
          pos.set(u, r.pos);
          const waiting = expecting.get(u) ?? [];
          for (const e of waiting) if (e.roomId in r.rooms) e.answered(at);
          expecting.set(
            u,
            waiting.filter((e) => !(e.roomId in r.rooms)),
          );
        }
      });
      parked.reset();
      await parked.everyone();
      const lag = monitorEventLoopDelay({ resolution: 10 });
      lag.enable();
      const t2 = performance.now();
      let done = false;
      const bigIngest = profiled(`load-b-${users}`, () => acc.ingest(big, body, { initial: true })).then(() => {
        done = true;
      });
      const live: number[] = [];
      const liveIngest: number[] = [];
      const pending: Promise<void>[] = [];
      for (let i = 0; !done; i++) {
        await new Promise((r) => setTimeout(r, 50));
        if (done) break;
        const u = i % users;
        const t3 = performance.now();
        pending.push(
          new Promise<void>((resolve) => {
            const answered = (at: number) => {
              live.push(at - t3);
              resolve();
            };
            expecting.set(u, [...(expecting.get(u) ?? []), { roomId: roomId(privateRoom(u)), answered }]);
            acc
              .ingest(devices[u] as Device, parse(liveMessage(privateRoom(u), userId((u + 1) % users), `during ${i}`)))
              .then(() => liveIngest.push(ms(t3)));
          }),
        );
      }
      await bigIngest;
      const took = ms(t2);
      lag.disable();
      await Promise.all(pending);
      stop.abort();
      await Promise.all(polling);
      printTransactions('(b)', transactionsOf.get(pool) ?? [], t2);
      console.log(
        `  (b) ${bigRooms.toLocaleString('en')}-room initial sync of another user while ${users} wait: ${fmt(took / 1000)} s; event-loop delay p99 ` +
          `${fmt(lag.percentile(99) / 1e6)} ms, max ${fmt(lag.max / 1e6)} ms; ${live.length} live events for waiting users ` +
          `answered p50 ${fmt(pct(live, 50))} ms, p99 ${fmt(pct(live, 99))} ms, max ${fmt(Math.max(0, ...live))} ms ` +
          `(their ingest committed p50 ${fmt(pct(liveIngest, 50))} ms, p99 ${fmt(pct(liveIngest, 99))} ms)`,
      );
    }
    stop.abort();
    await new Promise((r) => setTimeout(r, 100));
    await pool.end();
  }
}

/** BENCH_FANOUT=1000,5000: how many long-polling users the fan-out scenario runs with. */
const FANOUT_USERS = (process.env.BENCH_FANOUT ?? '1000,5000').split(',').map(Number);
const FANOUT_ROOMS_PER_USER = 200;
/**
 * BENCH_FANOUT_ROUNDS (default 2): live events, one after the other, each answered to everyone
 * before the next. The first runs code paths no request ran before (only first responses did),
 * so the JIT compiles them meanwhile; later rounds are what a running server sees.
 */
const FANOUT_ROUNDS = Number(process.env.BENCH_FANOUT_ROUNDS ?? 2);
/**
 * BENCH_FANOUT_TEMPLATE=name: the set-up (every user's initial sync, minutes at 5,000 users) is
 * kept as database `name_<users>` and copied by later runs, which then measure only the
 * fan-out. Only for runs whose migrations and ingest are the same as the run that made it.
 */
const FANOUT_TEMPLATE = process.env.BENCH_FANOUT_TEMPLATE || undefined;

/** Copies the set-up database; returns a new pool on it (a database being copied takes no connections). */
async function saveTemplate(serverUrl: string, pool: Pool, baseName: string, template: string): Promise<Pool> {
  await pool.end();
  await adminQuery(serverUrl, `DROP DATABASE IF EXISTS ${template} WITH (FORCE)`);
  await adminQuery(serverUrl, `CREATE DATABASE ${template} TEMPLATE ${DB_PREFIX}${baseName}`);
  return openDatabase(serverUrl, `${DB_PREFIX}${baseName}`);
}

/**
 * Fan-out: N users long-polling (each their own connection, 200 rooms each, one room shared by
 * all); one live event in the shared room is ingested: how long until every long-poll is
 * answered, and how long the event loop stalls meanwhile. The event is ingested once every
 * long-poll has said it waits (the engine's onWait hook).
 */
async function benchFanOut(serverUrl: string) {
  console.log('\n== fan-out (live event in a room shared by every waiting user) ==');
  for (const users of FANOUT_USERS) {
    const template = FANOUT_TEMPLATE && `${FANOUT_TEMPLATE}_${users}`;
    const reuse = template !== undefined && (await databaseExists(serverUrl, template));
    let pool = await freshDatabase(serverUrl, `syncv3_bench_fanout_${users}`, reuse ? template : undefined);
    const bus = createInProcessBus(logger);
    // A fresh accumulator on a copied database is one after a restart: its pollers have no
    // views yet, so the live event continues the stored timeline as on the first run.
    let acc = createAccumulator({ pool, bus, logger });
    let t0 = performance.now();
    const devices: { userId: string; deviceId: string }[] = [];
    for (let u = 0; u < users; u++) {
      if (reuse) {
        devices.push({ userId: userId(u), deviceId: 'BENCH' });
        continue;
      }
      const d = await device(pool, userId(u));
      devices.push(d);
      await acc.ingest(d, parse(fanOutInitialSync(u, FANOUT_ROOMS_PER_USER, Math.max(FANOUT_ROOMS_PER_USER, users / 2))));
    }
    if (!process.env.BENCH_NO_ANALYZE) await pool.query('ANALYZE');
    const setup = ms(t0);
    if (template && !reuse) {
      pool = await saveTemplate(serverUrl, pool, `syncv3_bench_fanout_${users}`, template);
      acc = createAccumulator({ pool, bus, logger });
    }
    // The long-polls are parked once each has called onWait (its computation found nothing).
    const parked = parkedLongPolls(users);
    const { engine } = await createSyncService(
      { pool, bus, logger, onWait: parked.onWait },
      { maxConnectionsPerDevice: 10, maxConnectionsInMemory: users * 2 },
    );
    const signal = new AbortController().signal;
    t0 = performance.now();
    const positions: string[] = [];
    for (const d of devices) positions.push((await engine.sync(d, roomListRequest([0, 19], undefined), signal)).pos);
    const firstResponses = ms(t0);
    for (let round = 1; round <= FANOUT_ROUNDS; round++) {
      const answered: number[] = [];
      let start = 0;
      parked.reset();
      const waits = devices.map((d, i) =>
        engine.sync(d, roomListRequest([0, 19], positions[i], 60_000), signal).then((r) => {
          answered.push(performance.now() - start);
          positions[i] = r.pos;
          if (!r.rooms['!room0:bench'])
            throw new Error(
              `live event not delivered to ${d.userId} (${start ? 'after' : 'before'} the ingest): ${Object.keys(r.rooms).join(',')} ${toJson({ ...r, lists: undefined }).slice(0, 600)}`,
            );
        }),
      );
      await parked.everyone();
      const lag = monitorEventLoopDelay({ resolution: 10 });
      const queries = countQueries(pool);
      let ingested = 0;
      let cpu: NodeJS.CpuUsage = { user: 0, system: 0 };
      // Garbage collection pauses on the main thread meanwhile (what allocation per answer costs).
      let gcMs = 0;
      const gc = new PerformanceObserver((list) => {
        for (const e of list.getEntries()) gcMs += e.duration;
      });
      gc.observe({ entryTypes: ['gc'] });
      await profiled(`fanout-${users}-${round}`, async () => {
        lag.enable();
        const cpu0 = process.cpuUsage();
        start = performance.now();
        // Through the poller of the last user to join: its view of the shared room ends at the
        // latest stored event (the others' pollers never saw the later joins, so a message they
        // bring would be recorded as following a gap, out of the timeline).
        await acc.ingest(devices[users - 1] as (typeof devices)[number], parse(liveMessage(0, userId(1), `to everyone ${round}`)));
        ingested = ms(start);
        await Promise.all(waits);
        cpu = process.cpuUsage(cpu0);
        lag.disable();
      });
      gc.disconnect();
      printSqlStats(`fan-out to ${users}`);
      const what =
        round === 1
          ? `setup ${reuse ? `copied from ${template}` : `${fmt(setup / 1000)} s`}; first responses ${fmt(firstResponses / users)} ms each`
          : `round ${round}: the same long-polls again`;
      console.log(
        `${users} users waiting (${what}): ` +
          `ingest ${fmt(ingested)} ms; every long-poll answered p50 ${fmt(pct(answered, 50))} ms, p99 ${fmt(pct(answered, 99))} ms, ` +
          `max ${fmt(Math.max(...answered))} ms; event-loop lag p99 ${fmt(lag.percentile(99) / 1e6)} ms, max ${fmt(lag.max / 1e6)} ms; ` +
          `${fmt(queries.n / users)} queries per answer; process CPU ${fmt((cpu.user + cpu.system) / 1000 / users)} ms per answer, ` +
          `garbage collection pauses ${fmt(gcMs / users)} ms per answer ` +
          '(user and system time of every thread, ingest included: less noisy than the latencies on a shared machine)',
      );
    }
    await pool.end();
  }
}

/**
 * First open of a cold room (history from before the first contact, one event stored) with
 * timeline_limit 20, as Element X's room subscription asks: with history fetched from the
 * homeserver (a local fake serving /messages, BENCH_HISTORY_DELAY_MS standing for the
 * homeserver's own work, default 20) against the stored-only answer. Also the upstream
 * requests per room, and those a 1,000-room first contact's whole room list (timeline_limit 1) makes.
 */
async function benchHistory(serverUrl: string) {
  console.log('\n== history (first open of a cold room, timeline_limit 20) ==');
  const rooms = 1_000;
  const opens = Number(process.env.BENCH_HISTORY_OPENS ?? 200);
  const delayMs = Number(process.env.BENCH_HISTORY_DELAY_MS ?? 20);
  const pool = await freshDatabase(serverUrl, 'syncv3_bench_history');
  const bus = createInProcessBus(logger);
  const acc = createAccumulator({ pool, bus, logger });
  const d = await device(pool, userId(0));
  const fake = await startFakeHomeserver();
  const homeserver = createHomeserverClient({ kind: 'url', baseUrl: fake.url });
  const sync = initialSync(
    Array.from({ length: rooms }, (_, i) => ({ index: i, members: [userId(0), userId(1), userId(2)] })),
    1,
  );
  const histories = new Map<string, RoomHistory>();
  for (const [id, room] of Object.entries(sync.rooms.join)) {
    const older = olderMessages(id, 50, [userId(0), userId(1), userId(2)]);
    const history = fake.serveHistory(id, [...older, ...(room.timeline.events as { event_id: string }[])], {
      gate: () => new Promise((r) => setTimeout(r, delayMs)),
    });
    room.timeline.prev_batch = history.before(older.length);
    histories.set(id, history);
  }
  await acc.ingest(d, parse(sync));
  if (!process.env.BENCH_NO_ANALYZE) await pool.query('ANALYZE');
  const fetchHistory = historyFetcher({
    pollers: { get: () => ({ token: 'bench' }) as never },
    homeserver,
    accumulator: acc,
    pool,
    logger,
  });
  const withFetch = await createSyncService(
    { pool, bus, logger, history: { fetch: fetchHistory } },
    { maxConnectionsPerDevice: 10, maxConnectionsInMemory: 1000 },
  );
  const storedOnly = await createSyncService({ pool, bus, logger }, { maxConnectionsPerDevice: 10, maxConnectionsInMemory: 1000 });
  const signal = new AbortController().signal;
  const requests = () => [...histories.values()].reduce((n, h) => n + h.requests.length, 0);

  // The room list first, as Element X opens: the whole list at timeline_limit 1 fetches nothing.
  let res = await withFetch.engine.sync(d, roomListRequest([0, 19], undefined), signal);
  for (let end = 99; ; end += 100) {
    const last = Math.min(end, rooms - 1);
    res = await withFetch.engine.sync(d, roomListRequest([0, last], res.pos), signal);
    if (last === rooms - 1) break;
  }
  const listRequests = requests();

  const open = async (engine: typeof withFetch.engine, i: number) => {
    const t0 = performance.now();
    const out = await engine.sync(d, roomOpenRequest(roomId(i)), signal);
    toJson(out);
    return { ms: ms(t0), events: out.rooms[roomId(i)]?.timeline?.length ?? 0 };
  };
  const measure = async (engine: typeof withFetch.engine, from: number) => {
    const times: number[] = [];
    let events = 0;
    for (let i = from; i < from + opens; i++) {
      const r = await open(engine, i);
      times.push(r.ms);
      events += r.events;
    }
    return { times, events: events / opens };
  };
  const rt = await roundTripMs(pool);
  const stored = await measure(storedOnly.engine, 0);
  const before = requests();
  const fetched = await measure(withFetch.engine, opens);
  const perRoom = (requests() - before) / opens;
  const again = await measure(withFetch.engine, opens);
  const line = (what: string, r: { times: number[]; events: number }) =>
    console.log(
      `  ${what.padEnd(34)} p50 ${fmt(pct(r.times, 50)).padStart(6)} ms  p99 ${fmt(pct(r.times, 99)).padStart(6)} ms  (${fmt(pct(r.times, 50) / rt)}x round trip)  ${fmt(r.events)} events`,
    );
  console.log(`  ${rooms} rooms, ${opens} opens each; homeserver /messages delay ${delayMs} ms; PostgreSQL round trip ${fmt(rt)} ms`);
  line('stored only (1 event, limited)', stored);
  line('with history fetched', fetched);
  line('the same rooms again (stored now)', again);
  console.log(
    `  upstream /messages per cold room opened: ${fmt(perRoom)}; for the whole ${rooms}-room list at timeline_limit 1: ${listRequests}`,
  );
  await Promise.all([fake.close(), homeserver.close(), pool.end()]);
}

/** `n` messages before a room's stored timeline, oldest first. */
function olderMessages(room: string, n: number, senders: string[]) {
  return Array.from({ length: n }, (_, k) => ({
    type: 'm.room.message',
    sender: senders[k % senders.length] as string,
    content: { msgtype: 'm.text', body: `older ${k}` },
    event_id: `$older-${k}-${room.slice(1)}`,
    origin_server_ts: 1_600_000_000_000 + k,
  }));
}

function roomOpenRequest(room: string): SyncRequest {
  return {
    ...roomListRequest([0, 0], undefined),
    connId: `open-${room}`,
    lists: new Map(),
    roomSubscriptions: new Map([[room, { timelineLimit: 20, requiredState: [...ELEMENT_X_REQUIRED_STATE, ['m.room.member', '$LAZY']] }]]),
  };
}

/**
 * What the cluster bus (SYNCV3_CLUSTER) adds to an ingest: live single-message ingests into 100
 * rooms, alternately through an accumulator on the in-process bus and one on the cluster bus
 * (its NOTIFYs sent inside the ingest transaction), same database, same run; a second cluster
 * bus listening, as another process would, gives the lag from the start of an ingest to its
 * room.changed arriving there.
 */
async function benchNotify(serverUrl: string) {
  console.log('\n== notify (cluster bus cost per ingest) ==');
  const pool = await freshDatabase(serverUrl, 'syncv3_bench_notify');
  const rooms = 100;
  const setup = createAccumulator({ pool, bus: createInProcessBus(logger), logger });
  const d = await device(pool, userId(0));
  await setup.ingest(
    d,
    parse(
      initialSync(
        Array.from({ length: rooms }, (_, i) => ({ index: i, members: [userId(0), userId(1)] })),
        1,
      ),
    ),
  );
  let payloads = 0;
  let payloadBytes = 0;
  const transport = {
    notifyInTransaction: (tx: unknown, batch: readonly string[]) => {
      payloads += batch.length;
      payloadBytes += batch.reduce((n, b) => n + Buffer.byteLength(b), 0);
      return notifyInTransaction(tx as Queryable, batch);
    },
    notify: (batch: readonly string[]) => notify(pool, batch),
    changesSince: async () => ({ pos: 0, messages: [] }),
  };
  const clusterBus = createClusterBus('bench-a', transport, logger);
  const other = createClusterBus('bench-b', transport, logger);
  const arrived = new Map<string, number>();
  other.subscribe('room.changed', ({ roomId }) => arrived.set(roomId, performance.now()));
  const listener = await listen(
    pool,
    logger,
    (payload) => other.received(payload),
    async () => undefined,
  );
  const buses: [string, Bus][] = [
    ['in-process bus', createInProcessBus(logger)],
    ['cluster bus (NOTIFY)', clusterBus],
  ];
  const accs = buses.map(([name, bus]) => ({
    name,
    acc: createAccumulator({ pool, bus, logger }),
    times: [] as number[],
    lag: [] as number[],
  }));
  const perRound = 200;
  let n = 0;
  const started = performance.now();
  for (let round = 0; round < 5; round++) {
    for (const a of accs) {
      const clustered = a.acc !== accs[0]?.acc;
      for (let i = 0; i < perRound; i++) {
        const room = n++ % rooms;
        const t0 = performance.now();
        await a.acc.ingest(d, parse(liveMessage(room, userId(1), `live ${n}`)));
        a.times.push(ms(t0));
        if (!clustered) continue;
        // Waits for the other process's delivery, so each ingest is measured alone.
        const id = roomId(room);
        while ((arrived.get(id) ?? 0) < t0) await new Promise((r) => setImmediate(r));
        a.lag.push((arrived.get(id) as number) - t0);
      }
    }
  }
  const took = ms(started);
  const rt = await roundTripMs(pool);
  for (const a of accs) {
    const total = a.times.reduce((x, y) => x + y, 0);
    console.log(
      `  ${a.name.padEnd(22)} ${a.times.length} ingests: p50 ${fmt(pct(a.times, 50))} ms, p99 ${fmt(pct(a.times, 99))} ms, ` +
        `${fmt(a.times.length / (total / 1000))} ingests/s (${fmt(pct(a.times, 50) / rt)} round trips)`,
    );
  }
  const [plain, cluster] = accs;
  if (plain && cluster) {
    const extra = pct(cluster.times, 50) - pct(plain.times, 50);
    console.log(
      `  NOTIFY cost per ingest: ${fmt(extra)} ms at p50 (${fmt(extra / rt)} round trips); ` +
        `${fmt(payloads / cluster.times.length)} payloads, ${fmt(payloadBytes / cluster.times.length)} bytes per ingest; ` +
        `lag to another process: p50 ${fmt(pct(cluster.lag, 50))} ms, p99 ${fmt(pct(cluster.lag, 99))} ms ` +
        `(PostgreSQL round trip p50 ${fmt(rt)} ms; ${fmt(took / 1000)} s in all)`,
    );
  }
  await listener.close();
  await pool.end();
}

/** BENCH_TOKEN_ROTATIONS: how many refreshes the token scenario makes (default 10,000). */
const TOKEN_ROTATIONS = Number(process.env.BENCH_TOKEN_ROTATIONS ?? 10_000);
/**
 * BENCH_TOKEN_SNAPSHOTS: a directory; each run then writes heap snapshots of its proxy half-way
 * and at the end (`tokens-<run>-<requests>.heapsnapshot`), whose difference is what the second
 * half of the requests left behind.
 */
const TOKEN_SNAPSHOTS = process.env.BENCH_TOKEN_SNAPSHOTS;

/**
 * Token rotation (issue 16, bounded memory): one device whose access token is refreshed N times
 * (MAS/OIDC rotates them every few minutes), each new token making a sliding sync request, against
 * the same number of requests with one token (the baseline). Each runs in a proxy process of its
 * own, as operators run it: resident memory from /proc before and after, then the live heap.
 */
async function benchTokenRotation(serverUrl: string) {
  console.log('\n== token rotation (one device, its access token refreshed again and again) ==');
  const n = TOKEN_ROTATIONS.toLocaleString('en');
  const same = await rotationRun(serverUrl, 'baseline', () => 'token-0');
  const rotated = await rotationRun(serverUrl, 'rotation', (i) => `token-${i + 1}`);
  for (const [label, r] of [
    [`${n} requests with one token (baseline)`, same],
    [`${n} requests, a new token each`, rotated],
  ] as const)
    console.log(
      `  ${label}: RSS ${fmt(r.rssBefore)} -> ${fmt(r.rssAfter)} MiB, live heap after ${fmt(r.heap)} MiB; ` +
        `${fmt(r.perRequest)} ms per request; tokens stored ${r.stored}`,
    );
  console.log(
    `  rotation against baseline: RSS growth ${fmt(rotated.rssAfter - rotated.rssBefore)} vs ${fmt(same.rssAfter - same.rssBefore)} MiB, ` +
      `live heap ${fmt(rotated.heap / same.heap)}x, time per request ${fmt(rotated.perRequest / same.perRequest)}x ` +
      '(a homeserver whoami and a token write each)',
  );
}

/** The bytes a V8 heap snapshot's objects hold: the sum of their self sizes. */
function heldBytes(snapshotJson: string): number {
  const snap = JSON.parse(snapshotJson) as { snapshot: { meta: { node_fields: string[] } }; nodes: number[] };
  const fields = snap.snapshot.meta.node_fields;
  let total = 0;
  for (let i = fields.indexOf('self_size'); i < snap.nodes.length; i += fields.length) total += snap.nodes[i] as number;
  return total;
}

async function rotationRun(serverUrl: string, run: string, tokenOf: (i: number) => string) {
  const fake = await startFakeHomeserver({ maxWaitMs: 1_000 });
  const dbUrl = await freshDatabaseUrl(serverUrl, 'syncv3_bench_tokens');
  const [port, promPort, pprofPort] = [await freePort(), await freePort(), await freePort()];
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SYNCV3_')));
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: {
      ...clean,
      SYNCV3_SERVER: fake.url,
      SYNCV3_DB: dbUrl,
      SYNCV3_SECRET: 'bench-secret',
      SYNCV3_BINDADDR: `127.0.0.1:${port}`,
      SYNCV3_LOG_LEVEL: 'warn',
      SYNCV3_PROM: `127.0.0.1:${promPort}`,
      SYNCV3_PPROF: `127.0.0.1:${pprofPort}`,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const rss = async () => Number(/VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${child.pid}/status`, 'utf8'))?.[1]) / 1024;
  // A heap snapshot (SYNCV3_PPROF) collects all garbage first: the sizes of the objects it lists
  // are what is really held. (Not the heap size the metrics report after it: writing the
  // snapshot out leaves tens of MiB of garbage of its own.) It inflates RSS, so it comes last.
  const snapshot = async () => (await fetch(`http://127.0.0.1:${pprofPort}/debug/pprof/heap`)).arrayBuffer();
  const liveHeap = async () => heldBytes(Buffer.from(await snapshot()).toString('utf8')) / 1024 / 1024;
  try {
    const url = `http://127.0.0.1:${port}`;
    await waitFor(`${url}/health`, 30_000);
    const device = { userId: '@rotating:bench', deviceId: 'PHONE' };
    fake.queueSync(tokenOf(0), initialSync([{ index: 0, members: [device.userId, userId(1)] }], 1) as Record<string, unknown>);
    let pos: string | undefined;
    const request = async (token: string) => {
      fake.addToken(token, device.userId, device.deviceId);
      const query = pos === undefined ? 'timeout=0' : `timeout=0&pos=${encodeURIComponent(pos)}`;
      const res = await fetch(`${url}/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?${query}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ conn_id: 'phone', lists: { all: { ranges: [[0, 19]], timeline_limit: 1, required_state: [] } } }),
      });
      const body = (await res.json()) as { pos?: string };
      if (!body.pos) throw new Error(`sliding sync answered ${res.status} ${JSON.stringify(body)}`);
      pos = body.pos;
    };
    // Warm-up with the first token: the first requests load code, caches and the pool.
    for (let i = 0; i < 500; i++) await request(tokenOf(0));
    const rssBefore = await rss();
    const t0 = performance.now();
    for (let i = 0; i < TOKEN_ROTATIONS; i++) {
      await request(tokenOf(i));
      const done = i + 1;
      if (TOKEN_SNAPSHOTS && (done === Math.floor(TOKEN_ROTATIONS / 2) || done === TOKEN_ROTATIONS))
        writeFileSync(`${TOKEN_SNAPSHOTS}/tokens-${run}-${done}.heapsnapshot`, Buffer.from(await snapshot()));
    }
    const perRequest = ms(t0) / TOKEN_ROTATIONS;
    const rssAfter = await rss();
    const check = new pg.Client({ connectionString: dbUrl });
    await check.connect();
    const stored = (await check.query<{ n: number }>('SELECT count(*)::int AS n FROM tokens')).rows[0]?.n;
    await check.end();
    return { rssBefore, rssAfter, heap: await liveHeap(), perRequest, stored };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await fake.close();
  }
}

const SCENARIOS: Record<string, (url: string) => Promise<void>> = {
  ingest: benchIngest,
  history: benchHistory,
  msc4186: benchMsc4186,
  load: benchIngestLoad,
  fanout: benchFanOut,
  notify: benchNotify,
  tokens: benchTokenRotation,
  server: benchServer,
};

const chosen = process.argv.slice(2).filter((a) => a in SCENARIOS);
const postgres = await startTestPostgres(logger);
try {
  console.log(
    `node ${process.version}; database ${postgres.embedded ? 'embedded PostgreSQL' : new URL(postgres.url).host}${global.gc ? '' : '; run with --expose-gc for memory figures'}`,
  );
  for (const name of chosen.length ? chosen : Object.keys(SCENARIOS)) await SCENARIOS[name]?.(postgres.url);
} finally {
  await postgres.stop();
}
