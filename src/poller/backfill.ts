// Fetching the history a timeline asks for and the proxy never had: a device's first poll is an
// initial sync with one event per room, so a room opened with timeline_limit 20 holds one event
// before a gap. The homeserver's /messages, asked with the requesting device's own token from
// the gap's stored prev_batch, gives the missing events, which are stored once for everyone
// (ingest/backfill.ts). Bounded three ways: one request per (room, gap) however many responses
// ask at once, a few requests at a time, and a time budget per response after which it is
// answered from what is stored (the fetch goes on and serves the next response).
import type { Accumulator } from '../ingest/accumulator.js';
import { timelineStart } from '../store/backfill-table.js';
import type { Pool } from '../store/db.js';
import type { Logger } from '../telemetry/logger.js';
import type { Telemetry } from '../telemetry/telemetry.js';
import { UpstreamError } from '../upstream/errors.js';
import type { Homeserver } from '../upstream/homeserver-client.js';
import type { PollerManager } from './poller-manager.js';
import { Semaphore } from './semaphore.js';

/** A room whose stored timeline starts at a gap and is `missing` events short of what is asked. */
export interface HistoryWant {
  roomId: string;
  gap: { eventId: string; prevBatch: string };
  missing: number;
}

/** Resolves within the budget with the rooms whose stored timeline grew. */
export type FetchHistory = (device: { userId: string; deviceId: string }, wants: HistoryWant[]) => Promise<Set<string>>;

export interface HistoryFetchOptions {
  /** How long a response waits for fetches before it is served from what is stored. */
  budgetMs: number;
  /** One /messages request's own limit (it may outlive the budget and still be stored). */
  requestTimeoutMs: number;
  /** /messages requests running at once, for all responses together. */
  concurrency: number;
  /** A failed (room, gap) is not asked again for this long. */
  retryAfterMs: number;
  /** Tests: told each time a response asks for history, before it waits (instead of sleeping until it does). */
  onAsk?: (roomIds: string[]) => void;
}

export const DEFAULT_HISTORY_FETCH_OPTIONS: HistoryFetchOptions = {
  budgetMs: 1500,
  requestTimeoutMs: 10_000,
  concurrency: 8,
  retryAfterMs: 30_000,
};

export interface HistoryFetchDeps {
  pollers: Pick<PollerManager, 'get'>;
  homeserver: Pick<Homeserver, 'messagesBefore'>;
  accumulator: Pick<Accumulator, 'storeHistory'>;
  pool: Pool;
  logger: Logger;
  telemetry?: Pick<Telemetry, 'metrics' | 'tracer'>;
  /** The homeserver said the device's token is dead: it is refused from then on. */
  onTokenRefused?: (token: string, softLogout: boolean) => Promise<void>;
}

/** At most this many events in one request, whatever timeline_limit asks. */
const MAX_EVENTS_PER_FETCH = 100;
/** Failed fetches remembered, at most. */
const MAX_REMEMBERED_FAILURES = 10_000;

export function historyFetcher(deps: HistoryFetchDeps, opts: HistoryFetchOptions = DEFAULT_HISTORY_FETCH_OPTIONS): FetchHistory {
  const metrics = deps.telemetry?.metrics;
  const tracer = deps.telemetry?.tracer;
  const limit = new Semaphore(opts.concurrency);
  const inFlight = new Map<string, Promise<boolean>>();
  const failedAt = new Map<string, number>();

  const failed = (key: string, kind: string) => {
    metrics?.historyFailures.inc({ kind });
    if (failedAt.size >= MAX_REMEMBERED_FAILURES) failedAt.delete(failedAt.keys().next().value as string);
    failedAt.set(key, performance.now());
    return false;
  };

  const fetchAndStore = async (key: string, token: string, device: { userId: string; deviceId: string }, want: HistoryWant) => {
    // A gap in the middle of the stored timeline (or one filled meanwhile) is not fetched here.
    const start = await timelineStart(deps.pool, want.roomId);
    if (start?.eventId !== want.gap.eventId || !start.gapBefore) return false;
    metrics?.historyFetches.inc();
    const started = performance.now();
    try {
      const page = await deps.homeserver.messagesBefore(
        token,
        want.roomId,
        want.gap.prevBatch,
        Math.min(want.missing, MAX_EVENTS_PER_FETCH),
        {
          timeoutMs: opts.requestTimeoutMs,
        },
      );
      const outcome = await deps.accumulator.storeHistory(device, { roomId: want.roomId, gapEventId: want.gap.eventId, ...page });
      // A chunk of only hidden history is not asked for again at once either (counted as `hidden`).
      if (!outcome.stored) return outcome.reason === 'moved' ? false : failed(key, outcome.reason);
      metrics?.historyEvents.inc(outcome.inserted + outcome.placed);
      return true;
    } catch (err) {
      deps.logger.debug({ err, roomId: want.roomId }, 'history before the stored timeline not fetched; serving what is stored');
      if (err instanceof UpstreamError) {
        // Only the token's own death: a 403 here means the history is not visible to this user.
        if (err.details.errcode === 'M_UNKNOWN_TOKEN') {
          await deps
            .onTokenRefused?.(token, err.details.softLogout === true)
            .catch((e) => deps.logger.warn({ err: e }, 'forgetting a refused token failed'));
        }
        return failed(key, err.kind);
      }
      return failed(key, 'store');
    } finally {
      metrics?.historyDuration.observe((performance.now() - started) / 1000);
    }
  };

  const flight = (token: string, device: { userId: string; deviceId: string }, want: HistoryWant): Promise<boolean> => {
    const key = `${want.roomId}\0${want.gap.eventId}`;
    const running = inFlight.get(key);
    if (running) return running;
    const at = failedAt.get(key);
    if (at !== undefined && performance.now() - at < opts.retryAfterMs) return Promise.resolve(false);
    const run = () =>
      limit
        .run(() => fetchAndStore(key, token, device, want))
        .catch((err) => {
          deps.logger.warn({ err, roomId: want.roomId }, 'history fetch failed');
          return false;
        });
    const p = (
      tracer?.enabled
        ? tracer.run('history_fetch', { room_id: want.roomId, missing: want.missing }, async (span) => {
            const grew = await run();
            span.setAttributes({ stored: grew });
            return grew;
          })
        : run()
    ).finally(() => inFlight.delete(key));
    inFlight.set(key, p);
    return p;
  };

  return (device, wants) => {
    const token = deps.pollers.get(device.userId, device.deviceId)?.token;
    if (!token || wants.length === 0) return Promise.resolve(new Set());
    opts.onAsk?.(wants.map((w) => w.roomId));
    return new Promise((resolve) => {
      const grown = new Set<string>();
      let pending = wants.length;
      const timer = setTimeout(() => resolve(new Set(grown)), opts.budgetMs);
      for (const want of wants) {
        void flight(token, device, want).then((grew) => {
          if (grew) grown.add(want.roomId);
          if (--pending === 0) {
            clearTimeout(timer);
            resolve(new Set(grown));
          }
        });
      }
    });
  };
}
