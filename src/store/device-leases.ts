// Which process polls which device, when several share one database (SYNCV3_CLUSTER): a
// session advisory lock per device, held on one connection of the process's own. A lock ends
// with its session, so a process that dies releases its devices at once; one cut off from the
// database loses them when the server ends its session (idle_session_timeout, set below), and
// stops its own pollers when its heartbeat goes unanswered. The ingest transaction stays the
// arbiter either way (it advances a device's `since` only from the one its poll started at),
// so even a poller that outlives its lock for a moment stores nothing twice.
import type pg from 'pg';
import type { Logger } from '../telemetry/logger.js';
import type { Pool } from './db.js';
import { dedicatedClient, INSTANCE_LOCK_KEY } from './instance-lock.js';

/**
 * First key of every device lock (two-int form, objsubid 2 in `pg_locks`): the bytes "sync".
 * The second is `hashtext(user_id || E'\n' || device_id)`; two devices whose hashes collide
 * are simply polled by the same process.
 */
export const DEVICE_LOCK_CLASS = 0x73796e63;

const DEVICE_KEY = `hashtext($1 || E'\\n' || $2)`;

export interface DeviceLeaseOptions {
  /** How often the lease connection proves it is alive. */
  heartbeatMs: number;
  /** A heartbeat unanswered this long means the leases are lost; also the server-side idle limit. */
  leaseMs: number;
}

export const DEFAULT_LEASE_OPTIONS: DeviceLeaseOptions = { heartbeatMs: 2_000, leaseMs: 8_000 };

export class DeviceLeases {
  #client: pg.Client | undefined;
  #connecting: Promise<pg.Client> | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    private readonly pool: Pool,
    private readonly logger: Logger,
    private readonly opts: DeviceLeaseOptions,
    /** Every lease of this process is gone (its connection dropped or stopped answering). */
    private readonly onLost: () => void,
  ) {}

  /** The lease connection, (re)opened on demand. */
  #connection(): Promise<pg.Client> {
    if (this.#client) return Promise.resolve(this.#client);
    this.#connecting ??= (async () => {
      const client = dedicatedClient(this.pool, 'device leases');
      client.on('error', (err) => this.logger.warn({ err: err.message }, 'device lease connection lost'));
      client.on('end', () => this.#lost(client));
      try {
        await client.connect();
        // Cut off from us, the server ends the session (and so frees our devices) by itself.
        await client.query(`SELECT set_config('idle_session_timeout', $1, false)`, [`${this.opts.leaseMs}ms`]);
      } catch (err) {
        await client.end().catch(() => undefined);
        throw err;
      }
      this.#client = client;
      this.#beat(client);
      return client;
    })().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  #beat(client: pg.Client) {
    clearInterval(this.#heartbeat);
    this.#heartbeat = setInterval(() => {
      let answered = false;
      const timer = setTimeout(() => {
        if (answered || this.#client !== client) return;
        this.logger.error({ leaseMs: this.opts.leaseMs }, 'device lease connection stopped answering; giving up its devices');
        // Destroying the socket ends the session on our side; the server frees the locks itself.
        (client as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
        this.#lost(client);
      }, this.opts.leaseMs - this.opts.heartbeatMs).unref();
      client.query('SELECT 1').then(
        () => {
          answered = true;
          clearTimeout(timer);
        },
        () => clearTimeout(timer),
      );
    }, this.opts.heartbeatMs).unref();
  }

  #lost(client: pg.Client) {
    if (this.#client !== client) return;
    this.#client = undefined;
    clearInterval(this.#heartbeat);
    if (!this.#closed) this.onLost();
  }

  /** True when this process now holds the device (or already did). */
  async tryAcquire(userId: string, deviceId: string): Promise<boolean> {
    const client = await this.#connection();
    const { rows } = await client.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock($3, ${DEVICE_KEY}) AS ok`, [
      userId,
      deviceId,
      DEVICE_LOCK_CLASS,
    ]);
    return rows[0]?.ok === true;
  }

  async release(userId: string, deviceId: string): Promise<void> {
    const client = this.#client;
    if (!client) return;
    await client.query(`SELECT pg_advisory_unlock($3, ${DEVICE_KEY})`, [userId, deviceId, DEVICE_LOCK_CLASS]).catch(() => undefined);
  }

  /** Processes sharing the database now: the sessions holding the instance lock. */
  async liveProcesses(): Promise<number> {
    const client = await this.#connection();
    const { rows } = await client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND objsubid = 1
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND classid::int8 = ($1::int8 >> 32) AND objid::int8 = ($1::int8 & 4294967295)`,
      [INSTANCE_LOCK_KEY],
    );
    return rows[0]?.n ?? 1;
  }

  /**
   * Up to `limit` devices seen within `maxIdleDays` that have a token and that no process holds,
   * in a random order so that processes claiming at once mostly try different ones. Keys only:
   * tokens are read for the devices actually claimed.
   */
  async freeDevices(maxIdleDays: number, limit: number): Promise<{ userId: string; deviceId: string }[]> {
    if (limit <= 0) return [];
    const client = await this.#connection();
    const { rows } = await client.query<{ userId: string; deviceId: string }>(
      // The held locks are read once (pg_locks is a function, not a table), then anti-joined.
      `WITH held AS MATERIALIZED (
         SELECT l.objid::int8 AS k FROM pg_locks l
          WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid::int8 = $3
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       )
       SELECT d.user_id AS "userId", d.device_id AS "deviceId" FROM devices d
        WHERE d.last_seen_at > now() - make_interval(days => $1)
          AND EXISTS (SELECT 1 FROM tokens t WHERE t.user_id = d.user_id AND t.device_id = d.device_id)
          AND NOT EXISTS (SELECT 1 FROM held WHERE held.k = (hashtext(d.user_id || E'\\n' || d.device_id)::int8 & 4294967295))
        ORDER BY random() LIMIT $2`,
      [maxIdleDays, limit, DEVICE_LOCK_CLASS],
    );
    return rows;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#heartbeat);
    const client = this.#client ?? (await this.#connecting?.catch(() => undefined));
    this.#client = undefined;
    await client?.end().catch(() => undefined);
  }
}
