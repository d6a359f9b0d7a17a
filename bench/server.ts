// `SYNCV3_BENCH_SERVER=local npm run bench -- server`: issue 16 (c) against a real homeserver,
// side by side with its native sliding sync endpoint.
//
// BENCH_SERVER_USERS users (default 200; a list such as 200,1000 runs each size with new users and
// a new room) share one room. Each holds an Element X-shaped room-list connection (a list window,
// timeline_limit 1, Element X's required_state, account data, receipts and typing extensions)
// that long-polls 30 s at a time. One of them sends BENCH_SERVER_MESSAGES messages (default 20)
// BENCH_SERVER_INTERVAL_MS apart (default 2,000). For every (user, message): the time from the
// send request leaving to that user's long-poll answer carrying the message; whether the message
// came as its own update, together with a later one, only overtaken (a later message came and it
// never did: with timeline_limit 1 the room then shows the later one), or not at all (missing).
//
// The phases (BENCH_SERVER_PHASES, default native,proxy, run in that order) use the same users,
// room and sender:
// - native: Synapse's own MSC4186 endpoint;
// - proxy: this proxy, `node src/main.ts` as a child process on a fresh database
//   (syncv3_bench_server), whose real pollers long-poll the homeserver's v2 /sync as in
//   production. It is started, and every user's poller started (the user's first request), before
//   the first phase, so in the native phase too the homeserver carries the pollers' long-polls and
//   the proxy ingests every message (200 copies): both phases run with a deployed proxy's load.
//   The bench's SYNCV3_* variables (say SYNCV3_MAX_DB_CONN) are passed on to it, except the
//   SYNCV3_TEST_/BENCH_/E2E_ ones; during its message phase its /metrics are sampled, and with
//   BENCH_CPU_PROFILE=dir its CPU profile is saved there (via SYNCV3_PPROF).
// Each phase opens a new connection per user (as an app does when it starts), then long-polls.
//
// SYNCV3_BENCH_SERVER: `local` starts the e2e tier's throwaway Synapse (scripts/synapse.sh; needs
// root, rate limits off, SQLite); or the base URL of a running homeserver, with
// SYNCV3_BENCH_REGISTRATION_SECRET its `registration_shared_secret` (users are registered with the
// shared-secret admin API, so its rate limits apply to the messages only).
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { type Json, MatrixHttpError, type MatrixUser, registerWithSharedSecret } from '../test/support/matrix-users.js';
import { freePort } from '../test/support/ports.js';
import { REGISTRATION_SECRET, startSynapse } from '../test/support/synapse.js';
import { ELEMENT_X_REQUIRED_STATE, emptyDatabase, fmt, ms, pct } from './figures.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const USERS = (process.env.BENCH_SERVER_USERS ?? '200').split(',').map(Number);
const MESSAGES = Number(process.env.BENCH_SERVER_MESSAGES ?? 20);
const INTERVAL_MS = Number(process.env.BENCH_SERVER_INTERVAL_MS ?? 2000);
const PHASES = (process.env.BENCH_SERVER_PHASES ?? 'native,proxy').split(',');
const LONG_POLL_MS = 30_000;
/** How long after the last message a phase waits for users who have not seen it yet. */
const GRACE_MS = 30_000;
/** Requests at once while setting up (registration, joins, first requests). */
const SETUP_WIDTH = 8;

const sleep = (msecs: number) => new Promise((r) => setTimeout(r, Math.max(0, msecs)));

/** fn over every item, at most `width` at a time; results in the items' order. */
async function inParallel<T, R>(items: readonly T[], width: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return out;
}

interface Homeserver {
  url: string;
  secret: string;
  stop(): void;
}

async function homeserver(spec: string): Promise<Homeserver> {
  if (spec === 'local') {
    const started = await startSynapse();
    if (started.skip !== undefined) throw new Error(`SYNCV3_BENCH_SERVER=local: ${started.skip}`);
    return { url: started.url, secret: REGISTRATION_SECRET, stop: started.stop };
  }
  const secret = process.env.SYNCV3_BENCH_REGISTRATION_SECRET;
  if (!/^https?:\/\//.test(spec) || !secret)
    throw new Error(
      'SYNCV3_BENCH_SERVER is `local` or a homeserver base URL, and then SYNCV3_BENCH_REGISTRATION_SECRET is its registration_shared_secret',
    );
  return { url: spec.replace(/\/+$/, ''), secret, stop: () => undefined };
}

/** The wire body of Element X's room-list connection (bench/run.ts roomListRequest, as JSON). */
function roomListBody(windowSize: number) {
  return {
    conn_id: 'room-list',
    lists: { all_rooms: { ranges: [[0, windowSize - 1]], timeline_limit: 1, required_state: ELEMENT_X_REQUIRED_STATE } },
    extensions: {
      account_data: { enabled: true },
      receipts: { enabled: true, rooms: ['*'] },
      typing: { enabled: true },
    },
  };
}
const BODY = roomListBody(20);

interface ChildProxy {
  url: string;
  metricsUrl: string;
  /** With BENCH_CPU_PROFILE set: its SYNCV3_PPROF CPU profile endpoint. */
  profileUrl: string | undefined;
  /** The last lines it printed (warnings and errors). */
  tail(): string;
  stop(): Promise<void>;
}

async function startProxyProcess(hsUrl: string, dbUrl: string): Promise<ChildProxy> {
  const [port, promPort] = [await freePort(), await freePort()];
  const pprofPort = process.env.BENCH_CPU_PROFILE ? await freePort() : undefined;
  const passed = Object.entries(process.env).filter(([k]) => !/^SYNCV3_(TEST|BENCH|E2E)_/.test(k));
  const env = {
    ...Object.fromEntries(passed),
    SYNCV3_SERVER: hsUrl,
    SYNCV3_DB: dbUrl,
    SYNCV3_SECRET: randomBytes(32).toString('hex'),
    SYNCV3_BINDADDR: `127.0.0.1:${port}`,
    SYNCV3_PROM: `127.0.0.1:${promPort}`,
    ...(pprofPort ? { SYNCV3_PPROF: `127.0.0.1:${pprofPort}` } : {}),
    SYNCV3_LOG_LEVEL: process.env.SYNCV3_LOG_LEVEL ?? 'warn',
  };
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/main.ts')], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the proxy exited at start (${child.exitCode}):\n${output}`);
    const ok = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) }).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`the proxy did not answer /health within 60 s:\n${output}`);
    }
    await sleep(200);
  }
  return {
    url,
    metricsUrl: `http://127.0.0.1:${promPort}/metrics`,
    profileUrl: pprofPort ? `http://127.0.0.1:${pprofPort}/debug/pprof/profile` : undefined,
    tail: () => output.split('\n').slice(-6).join('\n'),
    stop,
  };
}

/** BENCH_CPU_PROFILE=dir: the proxy's CPU profile of its message phase, as dir/<label>.cpuprofile. */
async function saveProfile(url: string, label: string): Promise<void> {
  const res = await fetch(url);
  const file = path.join(process.env.BENCH_CPU_PROFILE as string, `${label}.cpuprofile`);
  writeFileSync(file, Buffer.from(await res.arrayBuffer()));
  console.log(`  CPU profile of the proxy's message phase: ${file}`);
}

/** A Prometheus text page as series (name and labels) -> value, and one name summed over its series. */
async function scrape(url: string): Promise<(name: string) => number> {
  const text = await fetch(url, { signal: AbortSignal.timeout(5000) }).then((r) => r.text());
  const sums = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)/.exec(line);
    if (!m) continue;
    sums.set(m[1] as string, (sums.get(m[1] as string) ?? 0) + Number(m[3]));
  }
  return (name) => sums.get(name) ?? 0;
}

/** What the proxy's /metrics said during a message phase (gauges sampled every 250 ms). */
function watchMetrics(url: string) {
  let stopped = false;
  const peaks = { poolWaiting: 0, outstandingMin: Number.POSITIVE_INFINITY, samples: 0 };
  const before = scrape(url);
  const loop = (async () => {
    while (!stopped) {
      const m = await scrape(url).catch(() => undefined);
      if (m) {
        peaks.samples++;
        peaks.poolWaiting = Math.max(peaks.poolWaiting, m('syncv3_db_pool_waiting_clients'));
        peaks.outstandingMin = Math.min(peaks.outstandingMin, m('sliding_sync_poller_num_outstanding_sync_v2_reqs'));
      }
      await sleep(250);
    }
  })();
  return async () => {
    stopped = true;
    await loop;
    const [b, a] = [await before, await scrape(url)];
    const mean = (name: string) => {
      const n = a(`${name}_count`) - b(`${name}_count`);
      return n ? ((a(`${name}_sum`) - b(`${name}_sum`)) / n) * 1000 : 0;
    };
    const count = (name: string) => a(`${name}_count`) - b(`${name}_count`);
    return (
      `proxy metrics during the messages: pool waiting clients max ${peaks.poolWaiting}, outstanding v2 long-polls min ` +
      `${peaks.outstandingMin} (${peaks.samples} samples); ${count('sliding_sync_poller_process_duration_secs')} v2 responses stored in ` +
      `${count('syncv3_ingest_duration_seconds')} ingest transactions, mean ` +
      `${fmt(mean('syncv3_ingest_duration_seconds'))} ms; ${count('sliding_sync_api_process_duration_secs')} sliding sync ` +
      `answers, mean ${fmt(mean('sliding_sync_api_process_duration_secs'))} ms (long-poll waits included); bus lag mean ` +
      `${fmt(mean('syncv3_bus_lag_seconds'))} ms`
    );
  };
}

/** One long-poll answer that carried timeline events of the shared room. */
interface Arrival {
  at: number;
  eventIds: string[];
}

interface PhaseResult {
  /** Per (user, message) that arrived: send -> the long-poll answer carrying it, ms. */
  latencies: number[];
  own: number;
  withLater: number;
  overtaken: number;
  missing: number;
  answers: number;
  errors: Map<string, number>;
  /** How long each send request took (the homeserver's answer to the PUT). */
  sendMs: number[];
}

/**
 * Every user long-polls `baseUrl` on a new connection while `sender` sends the messages; returns
 * the figures once everyone has seen the last message, or GRACE_MS after it was sent.
 */
async function messagePhase(
  label: string,
  baseUrl: string,
  users: MatrixUser[],
  sender: MatrixUser,
  room: string,
  onSending?: (seconds: number) => void,
): Promise<PhaseResult> {
  const stop = new AbortController();
  const arrivals: Arrival[][] = users.map(() => []);
  const errors = new Map<string, number>();
  let answers = 0;
  const firstPos = await inParallel(users, SETUP_WIDTH * 2, async (u) => {
    const res = await u.slidingSync(baseUrl, BODY, { slackMs: 300_000 });
    return res.pos as string;
  });
  const loops = users.map(async (u, i) => {
    let pos: string | undefined = firstPos[i];
    while (!stop.signal.aborted) {
      try {
        const res: Json = await u.slidingSync(baseUrl, BODY, { pos, timeout: LONG_POLL_MS, signal: stop.signal });
        const at = performance.now();
        answers++;
        pos = res.pos;
        const timeline: Json[] = res.rooms?.[room]?.timeline ?? [];
        if (timeline.length) arrivals[i]?.push({ at, eventIds: timeline.map((e) => e.event_id) });
      } catch (err) {
        if (stop.signal.aborted) return;
        const key = err instanceof MatrixHttpError ? `HTTP ${err.status} ${err.errcode ?? ''}` : (err as Error).name;
        errors.set(key, (errors.get(key) ?? 0) + 1);
        // An expired connection starts again, as a client does; anything else is retried after a pause.
        if (err instanceof MatrixHttpError && err.errcode === 'M_UNKNOWN_POS') pos = undefined;
        else await sleep(1000);
      }
    }
  });
  // Every long-poll has been sent; give the server time to have them all waiting (a real server
  // has no hook that says so).
  await sleep(Math.max(3000, users.length * 5));

  const sent: { at: number; eventId: string }[] = [];
  const sendMs: number[] = [];
  onSending?.(Math.ceil((MESSAGES * INTERVAL_MS) / 1000) + 3);
  const t0 = performance.now();
  for (let m = 0; m < MESSAGES; m++) {
    await sleep(t0 + m * INTERVAL_MS - performance.now());
    const at = performance.now();
    sent.push({ at, eventId: await sender.sendMessage(room, `${label} message ${m}`) });
    sendMs.push(ms(at));
  }
  const last = sent.at(-1)?.eventId;
  const deadline = performance.now() + GRACE_MS;
  const everyoneHasLast = () => arrivals.every((xs) => xs.some((a) => a.eventIds.includes(last as string)));
  while (performance.now() < deadline && !everyoneHasLast()) await sleep(100);
  stop.abort();
  await Promise.all(loops);

  const index = new Map(sent.map((s, m) => [s.eventId, m]));
  const result: PhaseResult = { latencies: [], own: 0, withLater: 0, overtaken: 0, missing: 0, answers, errors, sendMs };
  for (const xs of arrivals) {
    const firstAt = new Array<number>(MESSAGES).fill(Number.NaN);
    const alone = new Array<boolean>(MESSAGES).fill(false);
    let newestSoFar = -1;
    for (const a of xs) {
      const carried = a.eventIds.map((id) => index.get(id)).filter((m): m is number => m !== undefined);
      if (!carried.length) continue;
      const newest = Math.max(...carried);
      for (const m of carried) {
        if (!Number.isNaN(firstAt[m] as number)) continue;
        firstAt[m] = a.at;
        // Its own update: the newest message of its answer, and no later one came before it.
        alone[m] = m === newest && m > newestSoFar;
      }
      newestSoFar = Math.max(newestSoFar, newest);
    }
    for (let m = 0; m < MESSAGES; m++) {
      const at = firstAt[m] as number;
      if (!Number.isNaN(at)) {
        result.latencies.push(at - (sent[m]?.at as number));
        if (alone[m]) result.own++;
        else result.withLater++;
      } else if (newestSoFar > m) result.overtaken++;
      else result.missing++;
    }
  }
  return result;
}

function report(label: string, users: number, r: PhaseResult) {
  const total = users * MESSAGES;
  const lat = r.latencies;
  const within = (s: number) => lat.filter((x) => x <= s * 1000).length;
  const errs = [...r.errors].map(([k, n]) => `${n} x ${k}`).join(', ');
  console.log(
    `  ${label.padEnd(6)} send -> long-poll answered: p50 ${fmt(pct(lat, 50) / 1000)} s, p99 ${fmt(pct(lat, 99) / 1000)} s, ` +
      `max ${fmt(Math.max(0, ...lat) / 1000)} s; of ${total}: ${r.own} as their own update, ${r.withLater} together with a ` +
      `later message, ${r.overtaken} overtaken (never shown), ${r.missing} missing; ${within(1)} within 1 s, ${within(2)} within 2 s; ` +
      `${r.answers} answers${errs ? `; errors: ${errs}` : ''}; the sends took p50 ${fmt(pct(r.sendMs, 50))} ms, max ${fmt(Math.max(...r.sendMs))} ms`,
  );
}

export async function benchServer(postgresUrl: string): Promise<void> {
  console.log('\n== server (issue 16 (c): a room shared by N users, real homeserver, native endpoint vs proxy) ==');
  const spec = process.env.SYNCV3_BENCH_SERVER;
  if (!spec) {
    console.log('  skipped: set SYNCV3_BENCH_SERVER (`local`, or a homeserver URL with SYNCV3_BENCH_REGISTRATION_SECRET)');
    return;
  }
  const hs = await homeserver(spec);
  try {
    console.log(`  homeserver ${hs.url}; ${MESSAGES} messages ${INTERVAL_MS} ms apart; phases ${PHASES.join(' then ')}`);
    const run = randomBytes(3).toString('hex');
    for (const n of USERS) {
      const t0 = performance.now();
      const users = await inParallel(
        Array.from({ length: n }, (_, i) => `bench-${run}-${n}-${i}`),
        SETUP_WIDTH,
        (localpart) => registerWithSharedSecret(hs.url, hs.secret, localpart),
      );
      const sender = users[0] as MatrixUser;
      const room = await sender.createRoom({ preset: 'public_chat', name: `shared by ${n}` });
      await inParallel(users.slice(1), SETUP_WIDTH, (u) => u.join(room));
      console.log(`${n} users in one room (registered and joined in ${fmt(ms(t0) / 1000)} s):`);

      let proxy: ChildProxy | undefined;
      try {
        if (PHASES.includes('proxy')) {
          const t1 = performance.now();
          proxy = await startProxyProcess(hs.url, await emptyDatabase(postgresUrl, 'syncv3_bench_server'));
          // Each user's first request starts the user's poller and waits for its initial sync.
          await inParallel(users, SETUP_WIDTH * 2, (u) => u.slidingSync((proxy as ChildProxy).url, BODY, { slackMs: 600_000 }));
          console.log(`  proxy started and ${n} pollers synced in ${fmt(ms(t1) / 1000)} s`);
        }
        for (const phase of PHASES) {
          if (phase === 'native') report('native', n, await messagePhase('native', hs.url, users, sender, room));
          else if (phase === 'proxy' && proxy) {
            const watched = watchMetrics(proxy.metricsUrl);
            let profile: Promise<void> | undefined;
            const { profileUrl } = proxy;
            const result = await messagePhase('proxy', proxy.url, users, sender, room, (seconds) => {
              if (profileUrl) profile = saveProfile(`${profileUrl}?seconds=${seconds}`, `server-proxy-${n}`);
            });
            await profile;
            const metrics = await watched();
            report('proxy', n, result);
            console.log(`         ${metrics}`);
          } else throw new Error(`BENCH_SERVER_PHASES: unknown phase ${phase} (native or proxy)`);
        }
      } finally {
        if (proxy) {
          const tail = proxy.tail().trim();
          await proxy.stop();
          if (tail) console.log(`  the proxy's last output:\n${tail}`);
        }
      }
    }
  } finally {
    hs.stop();
  }
}
