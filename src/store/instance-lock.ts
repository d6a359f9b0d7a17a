// Which processes may use one database at a time. A process takes a session advisory lock on a
// connection of its own, held for its whole life: exclusive when it runs alone (the default),
// shared when it runs as one of several (SYNCV3_CLUSTER). So a second stand-alone process, or a
// stand-alone one beside clustered ones, refuses to start instead of polling every device
// twice. A session lock ends with its connection: a killed process releases it at once.
import pg from 'pg';
import type { Logger } from '../telemetry/logger.js';
import type { Pool } from './db.js';

/**
 * The advisory lock key (bigint form) that marks a database in use: the bytes "syncv4"
 * (0x73796e637634; the migrations hold "syncv3"). Visible in `pg_locks` as classid 0x7379,
 * objid 0x6e637634, objsubid 1.
 */
export const INSTANCE_LOCK_KEY = 0x73796e637634;

export type InstanceMode = 'alone' | 'cluster';

export class InstanceLockTaken extends Error {
  override name = 'InstanceLockTaken';
}

export interface InstanceLock {
  release(): Promise<void>;
}

/** A client configured as the pool's connections are (same database, TLS, application name). */
export function dedicatedClient(pool: Pool, applicationName: string): pg.Client {
  const { connectionString, ssl, application_name } = pool.options as pg.PoolConfig;
  return new pg.Client({ connectionString, ssl, application_name: `${application_name ?? 'syncv3'} ${applicationName}` });
}

async function tryLock(client: pg.Client, mode: InstanceMode): Promise<boolean> {
  const fn = mode === 'alone' ? 'pg_try_advisory_lock' : 'pg_try_advisory_lock_shared';
  const { rows } = await client.query<{ ok: boolean }>(`SELECT ${fn}($1) AS ok`, [INSTANCE_LOCK_KEY]);
  return rows[0]?.ok === true;
}

function refusal(mode: InstanceMode): string {
  return mode === 'alone'
    ? `another syncv3 process is using this database (it holds PostgreSQL advisory lock ${INSTANCE_LOCK_KEY}); ` +
        'two processes would poll every device twice and store every to-device message twice. Stop the other process, ' +
        'or run every process with SYNCV3_CLUSTER=1 (README: "Running several processes")'
    : `a syncv3 process without SYNCV3_CLUSTER is using this database (it holds PostgreSQL advisory lock ${INSTANCE_LOCK_KEY} ` +
        'exclusively); stop it or restart it with SYNCV3_CLUSTER=1 too';
}

/**
 * Takes the instance lock or throws InstanceLockTaken. If the lock's connection drops (the
 * database restarted), it is taken again as soon as the database answers; if another process
 * took it meanwhile, `onLost` hears why.
 */
export async function takeInstanceLock(
  pool: Pool,
  mode: InstanceMode,
  logger: Logger,
  onLost: (why: string) => void = () => undefined,
): Promise<InstanceLock> {
  let released = false;
  let client: pg.Client;
  let retry: NodeJS.Timeout | undefined;

  const connect = async (): Promise<pg.Client> => {
    const c = dedicatedClient(pool, 'instance lock');
    c.on('error', (err) => logger.warn({ err: err.message }, 'instance lock connection lost'));
    c.on('end', () => {
      if (released || c !== client) return;
      schedule(1000);
    });
    await c.connect();
    return c;
  };

  const schedule = (delayMs: number) => {
    retry = setTimeout(async () => {
      try {
        const c = await connect();
        client = c;
        if (!(await tryLock(c, mode))) {
          onLost(refusal(mode));
          return;
        }
        logger.info('instance lock taken again after its connection dropped');
      } catch {
        if (!released) schedule(Math.min(delayMs * 2, 10_000));
      }
    }, delayMs).unref();
  };

  client = await connect();
  let taken = false;
  try {
    taken = await tryLock(client, mode);
  } finally {
    if (!taken) await client.end().catch(() => undefined);
  }
  if (!taken) throw new InstanceLockTaken(refusal(mode));
  return {
    async release() {
      released = true;
      clearTimeout(retry);
      // Ending the session releases the lock.
      await client.end().catch(() => undefined);
    },
  };
}
