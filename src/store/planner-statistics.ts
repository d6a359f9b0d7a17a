// Keeps PostgreSQL's planner statistics in step with fast growth. A new deployment's tables
// start empty and grow by whole initial syncs within seconds; until autovacuum's next round
// (up to a minute later) the planner has no statistics at all and picks plans made for tiny
// tables, which made every answer in a room shared by 200 users wait seconds (bench `server`:
// p50 4.6-5.7 s right after the pollers' first syncs, 0.38 s once analysed). So the process
// runs ANALYZE itself when the events it stored since the last one reach a share of the events
// table's size then (as the planner last counted it), and leaves steady growth to autovacuum.
import type { Logger } from '../telemetry/logger.js';
import type { Queryable } from './db.js';

export interface StatisticsOptions {
  /** Analyse after at least this many new events... */
  minRows: number;
  /** ...and at least this share of the events stored at the last analysis. */
  growth: number;
  /** At most one analysis per this long. */
  minIntervalMs: number;
}

export const DEFAULT_STATISTICS_OPTIONS: StatisticsOptions = { minRows: 1_000, growth: 0.2, minIntervalMs: 5_000 };

export interface PlannerStatistics {
  /** `rows` events were just stored. */
  stored(rows: number): void;
  /** Resolves once the table's size is read and no analysis is running (tests, shutdown). */
  idle(): Promise<void>;
}

export function plannerStatistics(
  db: Queryable,
  logger: Logger,
  opts: StatisticsOptions = DEFAULT_STATISTICS_OPTIONS,
  now: () => number = Date.now,
): PlannerStatistics {
  let sinceLast = 0;
  // The events table's size as last analysed (unknown until read: nothing is due meanwhile).
  let atLast: number | undefined;
  let lastAt = Number.NEGATIVE_INFINITY;
  let running: Promise<void> | undefined;
  const counted = async () => {
    const { rows } = await db.query<{ n: string }>(
      `SELECT GREATEST(reltuples, 0)::bigint AS n FROM pg_class WHERE oid = 'events'::regclass`,
    );
    return Number(rows[0]?.n ?? 0);
  };
  const due = () =>
    atLast !== undefined && sinceLast >= Math.max(opts.minRows, atLast * opts.growth) && now() - lastAt >= opts.minIntervalMs;
  const analyse = async () => {
    const rows = sinceLast;
    const started = now();
    try {
      await db.query('ANALYZE');
      atLast = await counted();
      sinceLast -= rows;
      logger.debug({ rows, ms: now() - started }, 'planner statistics refreshed');
    } catch (err) {
      logger.warn({ err }, 'refreshing planner statistics failed; autovacuum will');
    } finally {
      lastAt = now();
      running = undefined;
    }
  };
  const reading = counted().then(
    (n) => {
      atLast ??= n;
    },
    (err: unknown) => logger.warn({ err }, 'reading the events table size failed; planner statistics left to autovacuum'),
  );
  return {
    stored(rows) {
      sinceLast += rows;
      if (!running && due()) running = analyse();
    },
    idle: async () => {
      await reading;
      await running;
    },
  };
}
