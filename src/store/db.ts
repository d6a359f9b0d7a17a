// The PostgreSQL pool and the two ways code uses it: a single query, or a transaction.
// Table modules take a `Queryable` so the same function runs inside or outside a transaction.
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { Logger } from '../telemetry/logger.js';
import type { Tracer } from '../telemetry/tracing.js';
import { type SslAttempt, sslPlan, triesNext } from './pg-ssl.js';

export type Queryable = Pick<pg.Pool | pg.PoolClient, 'query'>;
export type Pool = pg.Pool;

// bigint columns (stream positions) come back as strings by default; positions stay well under
// 2^53, and numbers compare and sort cheaply on the hot path.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number.parseInt(v, 10));

export interface PoolOptions {
  connectionString: string;
  max: number;
  idleTimeoutMs: number;
  applicationName?: string;
  /** TLS of every connection; unset: as the connection string says, read by node-postgres. */
  ssl?: SslAttempt;
}

export function createPool(opts: PoolOptions, logger: Logger, tracer?: Tracer): pg.Pool {
  const pool = new pg.Pool({
    connectionString: opts.connectionString,
    max: opts.max,
    idleTimeoutMillis: opts.idleTimeoutMs,
    connectionTimeoutMillis: 10_000,
    application_name: opts.applicationName ?? 'syncv3',
    ...(opts.ssl === undefined ? {} : { ssl: opts.ssl }),
  });
  // An idle client losing its connection (database restart) emits on the pool; without a
  // listener node would crash the process. The pool replaces the client on next use.
  pool.on('error', (err) => logger.warn({ err: err.message }, 'idle PostgreSQL connection lost'));
  if (tracer?.enabled) traceQueries(pool, tracer);
  return pool;
}

/**
 * One span per query (SYNCV3_OTLP_URL only): the pool's own `query` and that of every client
 * it opens (transactions), promise-style calls only. Callback-style calls are pg-pool's own
 * inside an already traced `pool.query`, so nothing is counted twice. The SQL text is
 * parameterized, so it carries no values (tokens, user data).
 */
function traceQueries(pool: pg.Pool, tracer: Tracer) {
  const wrap = (target: { query: unknown }) => {
    const original = (target.query as (...args: unknown[]) => unknown).bind(target);
    target.query = (...args: unknown[]) => {
      const first = args[0] as string | { text?: string; submit?: unknown } | undefined;
      if (typeof args.at(-1) === 'function' || (typeof first === 'object' && typeof first?.submit === 'function')) return original(...args);
      const text = typeof first === 'string' ? first : (first?.text ?? '');
      const operation = /^\s*(\w+)/.exec(text)?.[1]?.toUpperCase() ?? 'QUERY';
      const attributes = { 'db.system.name': 'postgresql', 'db.operation.name': operation, 'db.query.text': text.slice(0, 2000) };
      return tracer.run(operation, attributes, () => original(...args) as Promise<unknown>, 'client');
    };
  };
  wrap(pool);
  pool.on('connect', (client) => wrap(client));
}

/** Errors of a database that is not up yet (starting, or its host not yet resolvable): worth a retry. */
const TRANSIENT = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOENT',
  '57P03',
]);

function isTransient(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') return TRANSIENT.has(code);
  return err instanceof Error && /timeout expired|Connection terminated unexpectedly/i.test(err.message);
}

/** A pool whose TLS is what the connection string's sslmode means to libpq (see pg-ssl.ts), checked by one query. */
async function negotiatePool(opts: PoolOptions, logger: Logger, tracer: Tracer | undefined): Promise<pg.Pool> {
  const plan = sslPlan(opts.connectionString);
  for (const [i, ssl] of plan.attempts.entries()) {
    const pool = createPool({ ...opts, connectionString: plan.connectionString, ssl }, logger, tracer);
    try {
      await ping(pool);
      return pool;
    } catch (err) {
      await pool.end().catch(() => undefined);
      if (i === plan.attempts.length - 1 || !triesNext(plan.mode, err)) throw err;
    }
  }
  throw new Error('unreachable: a plan has at least one attempt');
}

/**
 * Opens the pool as the proxy does at startup: libpq's sslmode, and a database that is not up
 * yet (compose starts services together) retried with backoff for up to `retryForMs`.
 */
export async function openPool(
  opts: PoolOptions,
  logger: Logger,
  { tracer, retryForMs = 0 }: { tracer?: Tracer; retryForMs?: number } = {},
): Promise<pg.Pool> {
  const deadline = Date.now() + retryForMs;
  for (let delayMs = 250; ; delayMs = Math.min(delayMs * 2, 5000)) {
    try {
      return await negotiatePool(opts, logger, tracer);
    } catch (err) {
      if (!isTransient(err) || Date.now() + delayMs > deadline) throw err;
      logger.warn(
        { err: err instanceof Error ? err.message : String(err), retryInMs: delayMs },
        'PostgreSQL is not reachable yet; retrying',
      );
      await sleep(delayMs);
    }
  }
}

/**
 * Transactions that run one after another (the ingest queue's) on one pool connection, kept
 * while they come back to back and handed back by `release()` when the run of them ends: taking
 * a connection per transaction queued each of them again behind every query waiting for the pool
 * (170 at once while 200 connections were answered), and those transactions hold up all ingest.
 * Never two at once.
 */
export function serialTransactions(pool: pg.Pool) {
  let held: pg.PoolClient | undefined;
  return {
    async run<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
      held ??= await pool.connect();
      const client = held;
      try {
        return await inTransaction(client, fn);
      } catch (err) {
        if (broken.has(client)) {
          held = undefined;
          client.release(err instanceof Error ? err : new Error(String(err)));
        }
        throw err;
      }
    },
    release(): void {
      held?.release();
      held = undefined;
    },
  };
}

/** Runs fn in one transaction; rolls back and rethrows on any error. */
export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let failure: Error | undefined;
  try {
    return await inTransaction(client, fn);
  } catch (err) {
    if (broken.has(client)) failure = err instanceof Error ? err : new Error(String(err));
    throw err;
  } finally {
    client.release(failure);
  }
}

/** Connections on which even a ROLLBACK failed: released with an error, the pool drops them. */
const broken = new WeakSet<pg.PoolClient>();

/** BEGIN, fn, COMMIT on `client`; on any error ROLLBACK (noting the connection when that fails too) and rethrow. */
async function inTransaction<T>(client: pg.PoolClient, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => broken.add(client));
    throw err;
  }
}

/**
 * An error PostgreSQL raised for the statement itself (a constraint, a value out of range): the
 * connection and the server are fine. Not one of SQLSTATE classes 08 (connection), 53
 * (resources) or 57 (operator intervention: shutdown, cancel), nor a socket error.
 */
export function isStatementError(err: unknown): boolean {
  return err instanceof pg.DatabaseError && typeof err.code === 'string' && !/^(08|53|57)/.test(err.code);
}

export async function ping(db: Queryable): Promise<void> {
  await db.query('SELECT 1');
}
