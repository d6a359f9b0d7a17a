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
import type { HistoryAnswer, HistoryWant } from '../timeline-history.js';
import { UpstreamError } from '../upstream/errors.js';
import type { Homeserver } from '../upstream/homeserver-client.js';
import type { PollerManager } from './poller-manager.js';
import { Semaphore } from './semaphore.js';

/** Resolves within the budget. */
export type FetchHistory = (device: { userId: string; deviceId: string }, wants: HistoryWant[]) => Promise<HistoryAnswer>;

interface Result {
  grew: boolean;
  /** For `userId`, who asked. */
  complete: boolean;
  userId?: string;
}
const NOTHING: Result = { grew: false, complete: false };

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
/** /messages pages one fetch goes back at most (pages of history the user may not see count too). */
const MAX_PAGES = 3;
/** Failed fetches (and completed histories) remembered, at most. */
const MAX_REMEMBERED_FAILURES = 10_000;

export function historyFetcher(deps: HistoryFetchDeps, opts: HistoryFetchOptions = DEFAULT_HISTORY_FETCH_OPTIONS): FetchHistory {
  const metrics = deps.telemetry?.metrics;
  const tracer = deps.telemetry?.tracer;
  const limit = new Semaphore(opts.concurrency);
  const inFlight = new Map<string, Promise<Result>>();
  const failedAt = new Map<string, number>();

  const failed = (key: string, kind: string) => {
    metrics?.historyFailures.inc({ kind });
    if (failedAt.size >= MAX_REMEMBERED_FAILURES) failedAt.delete(failedAt.keys().next().value as string);
    failedAt.set(key, performance.now());
  };

  // (room, gap event, user): everything older that this user may see is stored (the homeserver
  // gave no token to go on from). Per user: others may see more.
  const complete = new Set<string>();
  const completeKey = (roomId: string, gapEventId: string, userId: string) => `${roomId}\0${gapEventId}\0${userId}`;
  const remember = (key: string) => {
    if (complete.size >= MAX_REMEMBERED_FAILURES) complete.delete(complete.values().next().value as string);
    complete.add(key);
  };

  /** Pages back until the missing events are stored, the room's (or the user's visible) start is reached, or MAX_PAGES. */
  const fetchAndStore = async (
    key: string,
    token: string,
    device: { userId: string; deviceId: string },
    want: HistoryWant,
  ): Promise<Result> => {
    // A gap in the middle of the stored timeline (or one filled meanwhile) is not fetched here.
    const start = await timelineStart(deps.pool, want.roomId);
    if (start?.eventId !== want.gap.eventId || !start.gapBefore || !want.gap.prevBatch) return NOTHING;
    let gapEventId = want.gap.eventId;
    let from: string = want.gap.prevBatch;
    let missing = want.missing;
    let grew = false;
    const started = performance.now();
    try {
      for (let page = 0; page < MAX_PAGES && missing > 0; page++) {
        metrics?.historyFetches.inc();
        const { events, end } = await deps.homeserver.messagesBefore(token, want.roomId, from, Math.min(missing, MAX_EVENTS_PER_FETCH), {
          timeoutMs: opts.requestTimeoutMs,
        });
        const outcome = await deps.accumulator.storeHistory(device, { roomId: want.roomId, gapEventId, events, end });
        if (outcome.stored) {
          grew = true;
          metrics?.historyEvents.inc(outcome.inserted + outcome.placed);
          missing -= outcome.inserted + outcome.placed;
          if (outcome.gapEventId === undefined) break;
          gapEventId = outcome.gapEventId;
        } else if (outcome.reason === 'moved') {
          break;
        } else if (outcome.reason === 'overlap') {
          failed(key, 'overlap');
          break;
        }
        // Nothing older this user may see: their timeline is complete, whatever others may see.
        if (end === undefined) {
          remember(completeKey(want.roomId, gapEventId, device.userId));
          return { grew, complete: true, userId: device.userId };
        }
        // (A page of only hidden history leaves the gap where it is, and paging goes on past it.)
        from = end;
      }
      return { grew, complete: false };
    } catch (err) {
      deps.logger.debug({ err, roomId: want.roomId }, 'history before the stored timeline not fetched; serving what is stored');
      if (err instanceof UpstreamError) {
        // Only the token's own death: a 403 here means the history is not visible to this user.
        if (err.details.errcode === 'M_UNKNOWN_TOKEN') {
          await deps
            .onTokenRefused?.(token, err.details.softLogout === true)
            .catch((e) => deps.logger.warn({ err: e }, 'forgetting a refused token failed'));
        }
        failed(key, err.kind);
      } else failed(key, 'store');
      return { grew, complete: false };
    } finally {
      metrics?.historyDuration.observe((performance.now() - started) / 1000);
    }
  };

  const flight = (token: string, device: { userId: string; deviceId: string }, want: HistoryWant): Promise<Result> => {
    if (complete.has(completeKey(want.roomId, want.gap.eventId, device.userId)))
      return Promise.resolve({ grew: false, complete: true, userId: device.userId });
    // One request per room and gap, whoever asks: what it stores is there for everyone (each
    // served what they may see); only "complete" is the asking user's own.
    const key = `${want.roomId}\0${want.gap.eventId}`;
    const running = inFlight.get(key);
    if (running) return running;
    const at = failedAt.get(key);
    if (at !== undefined && performance.now() - at < opts.retryAfterMs) return Promise.resolve(NOTHING);
    const run = () =>
      limit
        .run(() => fetchAndStore(key, token, device, want))
        .catch((err) => {
          deps.logger.warn({ err, roomId: want.roomId }, 'history fetch failed');
          return NOTHING;
        });
    const p = (
      tracer?.enabled
        ? tracer.run('history_fetch', { room_id: want.roomId, missing: want.missing }, async (span) => {
            const result = await run();
            span.setAttributes({ stored: result.grew, complete: result.complete });
            return result;
          })
        : run()
    ).finally(() => inFlight.delete(key));
    inFlight.set(key, p);
    return p;
  };

  return (device, wants) => {
    const token = deps.pollers.get(device.userId, device.deviceId)?.token;
    const answer: HistoryAnswer = { grown: new Set(), complete: new Set() };
    if (!token || wants.length === 0) return Promise.resolve(answer);
    opts.onAsk?.(wants.map((w) => w.roomId));
    return new Promise((resolve) => {
      let pending = wants.length;
      const done = () => resolve({ grown: new Set(answer.grown), complete: new Set(answer.complete) });
      const timer = setTimeout(done, opts.budgetMs);
      for (const want of wants) {
        void flight(token, device, want).then((result) => {
          if (result.grew) answer.grown.add(want.roomId);
          if (result.complete && result.userId === device.userId) answer.complete.add(want.roomId);
          if (--pending === 0) {
            clearTimeout(timer);
            done();
          }
        });
      }
    });
  };
}
