// Assembles the running proxy from a Config: database (external or embedded), migrations,
// secret, HTTP listener. Everything it starts is registered on one Lifecycle, so a failure
// half-way through start unwinds what did start, and stop() is one call for main.ts and tests.
import { chmod, readFile, rm, stat } from 'node:fs/promises';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createSecureContext } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import { Authenticator, type AuthOptions, DEFAULT_AUTH_OPTIONS } from './auth/authenticator.js';
import { type Bus, createInProcessBus } from './bus/bus.js';
import { startClusterBus } from './cluster.js';
import type { Address, Config } from './config.js';
import { buildApp } from './http/app.js';
import { createAccumulator } from './ingest/accumulator.js';
import { Lifecycle } from './lifecycle.js';
import { checkPersistentData } from './persistent-data.js';
import { DEFAULT_HISTORY_FETCH_OPTIONS, type HistoryFetchOptions, historyFetcher } from './poller/backfill.js';
import { DEFAULT_POLLER_OPTIONS, type PollerOptions } from './poller/device-poller.js';
import { exactPrevBatches } from './poller/exact-prev-batch.js';
import { PollerManager } from './poller/poller-manager.js';
import { loadOrCreateSecret } from './secret-file.js';
import { listening, StartupError } from './startup-error.js';
import { whileNoIngest } from './store/bus-channel.js';
import { openPool, type Pool, ping } from './store/db.js';
import { countToDevice } from './store/device-inbox-table.js';
import { DEFAULT_LEASE_OPTIONS, type DeviceLeaseOptions, DeviceLeases } from './store/device-leases.js';
import { startEmbeddedPostgres } from './store/embedded-postgres.js';
import { InstanceLockTaken, takeInstanceLock } from './store/instance-lock.js';
import { loadMigrations, migrate, migrationStatus } from './store/migrate.js';
import { SslConfigError } from './store/pg-ssl.js';
import { plannerStatistics } from './store/planner-statistics.js';
import { prune } from './store/retention.js';
import { createTokenCipher } from './store/token-cipher.js';
import { createSyncService } from './sync/create-engine.js';
import type { EngineDeps } from './sync/engine.js';
import { type ErrorReporter, noopReporter } from './telemetry/error-reporting.js';
import type { Logger } from './telemetry/logger.js';
import type { Metrics } from './telemetry/metrics.js';
import { startMetricsServer } from './telemetry/metrics-server.js';
import { startProfilingServer } from './telemetry/profiling-server.js';
import { startTelemetry, type Telemetry } from './telemetry/telemetry.js';
import { createForwarder } from './upstream/forwarder.js';
import { createHomeserverClient } from './upstream/homeserver-client.js';

/** How long a response waits for the homeserver's exact prev_batch before serving the nearest stored one. */
const PREV_BATCH_TIMEOUT_MS = 2000;

export interface RunningProxy {
  app: FastifyInstance;
  pool: Pool;
  bus: Bus;
  pollers: PollerManager;
  auth: Authenticator;
  metrics: Metrics;
  telemetry: Telemetry;
  /** Where the client API listens, e.g. `http://127.0.0.1:8008` or the unix socket path. */
  url: string;
  /** The SYNCV3_PROM listener (serving /metrics), when configured. */
  promUrl: string | undefined;
  /** The SYNCV3_PPROF listener (serving /debug/pprof/), when configured. */
  pprofUrl: string | undefined;
  /** The hourly housekeeping, run now (tests): idle connections expired, then retention. */
  housekeep(): Promise<void>;
  stop(): Promise<void>;
}

export interface ProxyOptions {
  migrationsDir?: string;
  /** Tests shorten backoffs and timeouts; production takes the defaults and the config's timeouts. */
  poller?: Partial<PollerOptions>;
  auth?: Partial<AuthOptions>;
  /** How long a request body may take to arrive (tests shorten it). */
  bodyTimeoutMs?: number;
  /** Tests shorten the history fetches' budgets. */
  history?: Partial<HistoryFetchOptions>;
  /** Tests: told each time a sliding sync request starts waiting (see EngineDeps.onWait). */
  onWait?: EngineDeps['onWait'];
  /** SYNCV3_CLUSTER timings (tests shorten them): device lease heartbeat and expiry, and how often devices are rebalanced. */
  cluster?: Partial<DeviceLeaseOptions> & { rebalanceMs?: number };
}

async function removeStaleSocket(path: string) {
  const info = await stat(path).catch(() => undefined);
  if (info?.isSocket()) await rm(path);
}

async function listen(app: FastifyInstance, bind: Address, tls: boolean): Promise<string> {
  if (bind.kind === 'unix') {
    await removeStaleSocket(bind.path);
    await app.listen({ path: bind.path });
    // As the Go proxy: connecting needs write permission, and the reverse proxy in front (nginx's
    // worker user) is rarely the proxy's own user. Restrict access with the directory's mode.
    await chmod(bind.path, 0o222);
    return bind.path;
  }
  await app.listen({ host: bind.host, port: bind.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : bind.port;
  const host = bind.host.includes(':') ? `[${bind.host}]` : bind.host;
  return `${tls ? 'https' : 'http'}://${host}:${port}`;
}

/**
 * The responses being written, so that on close each one ends its connection (`Connection:
 * close`) instead of leaving a keep-alive socket that server.close() would wait out.
 */
function trackResponses(server: Server) {
  const inFlight = new Set<ServerResponse>();
  let closing = false;
  server.on('request', (_req: IncomingMessage, res: ServerResponse) => {
    if (closing) res.shouldKeepAlive = false;
    inFlight.add(res);
    res.once('close', () => inFlight.delete(res));
  });
  return () => {
    closing = true;
    for (const res of inFlight) if (!res.headersSent) res.shouldKeepAlive = false;
  };
}

/** Closes the listener, giving in-flight requests `graceMs` before their sockets are cut. */
async function closeApp(app: FastifyInstance, graceMs: number, logger: Logger, endKeepAlive: () => void) {
  endKeepAlive();
  let timer: NodeJS.Timeout | undefined;
  const cut = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      logger.warn({ graceMs }, 'in-flight requests outlived the shutdown grace period; closing their connections');
      app.server.closeAllConnections();
      resolve();
    }, graceMs);
  });
  await Promise.race([app.close(), cut]);
  clearTimeout(timer);
}

/** The pool over SYNCV3_DB (or the embedded database), waiting a bounded time for it to come up. */
async function openDatabase(config: Config, connectionString: string, logger: Logger, telemetry: Telemetry): Promise<Pool> {
  const variable = config.db ? 'SYNCV3_DB' : 'SYNCV3_DATA_DIR';
  try {
    // In a cluster each process's sessions say whose they are (pg_stat_activity, pg_locks).
    const applicationName = config.cluster ? `syncv3 ${config.cluster.processId}` : undefined;
    return await openPool(
      { connectionString, max: config.maxDbConnections, idleTimeoutMs: config.dbIdleTimeoutMs, applicationName },
      logger,
      {
        tracer: telemetry.tracer,
        retryForMs: config.dbStartupTimeoutMs,
      },
    );
  } catch (err) {
    if (err instanceof SslConfigError) throw new StartupError('SYNCV3_DB', err.message, { cause: err });
    const why = err instanceof Error ? err.message : String(err);
    const waited = config.dbStartupTimeoutMs ? ` (retried for SYNCV3_DB_STARTUP_TIMEOUT_SECS=${config.dbStartupTimeoutMs / 1000})` : '';
    throw new StartupError(variable, `cannot use the PostgreSQL database: ${why}${waited}`, { cause: err });
  }
}

/** The HTTPS certificate and key, checked as a pair so that swapped or mismatched files are named. */
async function readTlsPair(tls: { cert: string; key: string }): Promise<{ cert: Buffer; key: Buffer }> {
  const [cert, key] = [await readFile(tls.cert), await readFile(tls.key)];
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new StartupError(
      'SYNCV3_TLS_CERT',
      `"${tls.cert}" and SYNCV3_TLS_KEY "${tls.key}" are not a PEM certificate (chain) and its private key (${why}); are the two swapped?`,
      { cause: err },
    );
  }
  return { cert, key };
}

export async function startProxy(config: Config, rootLogger: Logger, opts: ProxyOptions = {}): Promise<RunningProxy> {
  const logger = config.cluster ? rootLogger.child({ process: config.cluster.processId }) : rootLogger;
  const lifecycle = new Lifecycle(logger);
  let errors: ErrorReporter = noopReporter;
  try {
    // First to start and last to stop: errors and spans of everything else get reported and flushed.
    const telemetry = await startTelemetry(config, logger);
    lifecycle.onStop('telemetry', () => telemetry.stop());
    errors = telemetry.errors;
    const metrics = telemetry.metrics;
    let connectionString = config.db;
    if (!connectionString) {
      const ephemeral = config.requirePersistentData ? checkPersistentData(config.dataDir) : undefined;
      if (ephemeral) {
        throw new StartupError(
          'SYNCV3_DATA_DIR',
          `${ephemeral}: the embedded database and the generated secret would be lost with this container. ` +
            'Mount a volume there (docker run -v syncv3-data:/data …), or set SYNCV3_DB to an external PostgreSQL; ' +
            'SYNCV3_REQUIRE_PERSISTENT_DATA=0 runs a throwaway container anyway',
        );
      }
      const embedded = await startEmbeddedPostgres({ dataDir: config.dataDir }, logger).catch((err: unknown) => {
        throw new StartupError('SYNCV3_DATA_DIR', err instanceof Error ? err.message : String(err), { cause: err });
      });
      lifecycle.onStop('embedded postgres', () => embedded.stop());
      connectionString = embedded.connectionString;
    }
    const secret = config.secret ?? (await loadOrCreateSecret(config.dataDir, logger));

    const pool = await openDatabase(config, connectionString, logger, telemetry);
    lifecycle.onStop('database pool', () => pool.end());
    const instanceLock = await takeInstanceLock(pool, config.cluster ? 'cluster' : 'alone', logger, (why) => logger.error(why)).catch(
      (err: unknown) => {
        throw err instanceof InstanceLockTaken ? new StartupError('SYNCV3_DB', err.message, { cause: err }) : err;
      },
    );
    lifecycle.onStop('instance lock', () => instanceLock.release());
    const migrations = await loadMigrations(opts.migrationsDir);
    const applied = await migrate(pool, migrations);
    logger.info({ applied, schemaVersion: migrations.length }, applied.length ? 'database migrated' : 'database schema is current');

    // In a cluster the bus listens before anything reads the stream position, so nothing committed is missed.
    const bus: Bus = config.cluster
      ? await startClusterBus(config.cluster.processId, pool, logger, telemetry, lifecycle)
      : createInProcessBus(logger, telemetry);
    const homeserver = createHomeserverClient(config.server, telemetry);
    lifecycle.onStop('homeserver client', () => homeserver.close());
    const forwarder = createForwarder(config.server, { headersTimeoutMs: config.httpTimeoutMs, trustedProxies: config.trustedProxies });
    lifecycle.onStop('forwarder', () => forwarder.close());
    const cipher = createTokenCipher(secret);
    const accumulator = createAccumulator({ pool, bus, logger, telemetry, statistics: plannerStatistics(pool, logger) });
    // The leases tell the pollers when the lease connection is lost; the pollers need the leases to start.
    let leasesLost = () => {};
    const leases = config.cluster
      ? new DeviceLeases(pool, logger.child({ component: 'leases' }), { ...DEFAULT_LEASE_OPTIONS, ...opts.cluster }, () => leasesLost())
      : undefined;
    const pollers = new PollerManager(
      { homeserver, accumulator, pool, bus, cipher, logger: logger.child({ component: 'poller' }), telemetry, leases },
      {
        ...DEFAULT_POLLER_OPTIONS,
        httpTimeoutMs: config.httpTimeoutMs,
        initialTimeoutMs: config.httpInitialTimeoutMs,
        ...opts.poller,
        idleDays: 30,
        firstPollConcurrency: 16,
        rebalanceMs: opts.cluster?.rebalanceMs,
      },
    );
    leasesLost = () => pollers.leasesLost();
    lifecycle.onStop('pollers', () => pollers.stopAll());
    const auth = new Authenticator(
      { pool, homeserver, cipher, pollers, logger: logger.child({ component: 'auth' }) },
      { ...DEFAULT_AUTH_OPTIONS, whoamiTimeoutMs: config.httpTimeoutMs, ...opts.auth },
    );

    // Before any poller runs: nothing is in flight, so the stream's current value is committed.
    const prevBatches = exactPrevBatches({
      pollers,
      homeserver,
      pool,
      logger: logger.child({ component: 'prev_batch' }),
      timeoutMs: PREV_BATCH_TIMEOUT_MS,
      bus,
      onTokenRefused: (token, softLogout) => auth.tokenRefused(token, softLogout),
    });
    const fetchHistory = historyFetcher(
      {
        pollers,
        homeserver,
        accumulator,
        pool,
        logger: logger.child({ component: 'history' }),
        telemetry,
        onTokenRefused: (token, softLogout) => auth.tokenRefused(token, softLogout),
      },
      { ...DEFAULT_HISTORY_FETCH_OPTIONS, ...opts.history },
    );
    const createService = () =>
      createSyncService(
        { pool, bus, logger, metrics, prevBatches, history: { fetch: fetchHistory }, onWait: opts.onWait },
        {
          maxConnectionsPerDevice: config.maxConnectionsPerDevice,
          maxConnectionsInMemory: 10_000,
          sharedConnections: Boolean(config.cluster),
        },
      );
    // Other processes' pollers run already: the stream position read at start must be a committed one.
    const { engine, connections, users, metas } = config.cluster ? await whileNoIngest(pool, createService) : await createService();
    bus.subscribe('device.token_expired', ({ userId, deviceId }) => {
      void connections.dropDevice(userId, deviceId).catch((err) => logger.warn({ err }, 'dropping connections failed'));
    });
    // Hourly housekeeping: idle connections first, since they hold back what may be pruned.
    // Expired in memory too, or a returning client's pending pos would meet a deleted row.
    const housekeep = async () => {
      const expired = await connections.expireIdle(config.connectionTtlSecs);
      const pruned = await prune(pool, { keepPerRoom: 1000, batch: 50_000 });
      if (expired || pruned.events) logger.info({ expired, pruned }, 'housekeeping');
    };
    const expiry = setInterval(async () => {
      try {
        await housekeep();
      } catch (err) {
        logger.warn({ err }, 'housekeeping failed');
        errors.capture(err, { tags: { component: 'housekeeping' } });
      }
    }, 3_600_000).unref();
    lifecycle.onStop('connection expiry', async () => clearInterval(expiry));

    metrics.setSources({
      pollers: () => pollers.size,
      activeConnections: () => connections.size,
      cachedRooms: () => metas.size,
      cachedUsers: () => users.size,
      toDeviceBacklog: () => countToDevice(pool),
      dbPool: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    });
    // The operator listeners start before the client API and stop after it, so a drain can be watched.
    let promUrl: string | undefined;
    if (config.prom) {
      const address = config.prom;
      const prom = await listening('SYNCV3_PROM', address, () => startMetricsServer(metrics.registry, address, logger));
      lifecycle.onStop('metrics listener', () => prom.close());
      promUrl = prom.url;
    }
    let pprofUrl: string | undefined;
    if (config.pprof) {
      const secrets = () => [secret, config.otlp?.password, ...pollers.tokens()];
      const address = config.pprof;
      const pprof = await listening('SYNCV3_PPROF', address, () => startProfilingServer(address, logger, { secrets }));
      lifecycle.onStop('profiling listener', () => pprof.close());
      pprofUrl = pprof.url;
    }

    const app = buildApp(
      {
        logger,
        ready: async () => {
          await ping(pool);
          const status = await migrationStatus(pool, migrations);
          if (status.current !== status.latest) throw new Error(`schema at ${status.current}, expected ${status.latest}`);
          return { schemaVersion: status.current };
        },
        slidingSync: { auth, engine, telemetry },
        clientPage: { auth },
        frontDoor: {
          forwarder,
          metrics,
          tokens: auth,
          rooms: accumulator,
          serverUrl: config.server.kind === 'url' ? config.server.baseUrl : undefined,
        },
        errors,
      },
      {
        https: config.tls ? await readTlsPair(config.tls) : undefined,
        bodyTimeoutMs: opts.bodyTimeoutMs,
        upstreamTimeoutMs: config.httpTimeoutMs,
      },
    );
    const endKeepAlive = trackResponses(app.server);
    lifecycle.onStop('http listener', async () => {
      // Waiting long-polls answer at once with their current response (a new pos, committed), so
      // clients resume on the next instance instead of seeing their connection cut.
      engine.stopWaiting();
      await closeApp(app, config.shutdownGraceMs, logger, endKeepAlive);
    });
    const url = await listening('SYNCV3_BINDADDR', config.bind, () => listen(app, config.bind, Boolean(config.tls)));
    logger.info(
      { url, upstream: config.server.kind === 'url' ? config.server.baseUrl : config.server.path },
      'sliding sync proxy listening',
    );
    // Serving does not wait for every device to resume; first polls are throttled inside.
    void pollers.resumeAll().then(
      (n) => logger.info({ devices: n }, 'pollers resumed'),
      (err) => {
        logger.error({ err }, 'resuming pollers failed');
        errors.capture(err, { tags: { component: 'poller' } });
      },
    );
    return { app, pool, bus, pollers, auth, metrics, telemetry, url, promUrl, pprofUrl, housekeep, stop: () => lifecycle.stop() };
  } catch (err) {
    errors.capture(err, { tags: { component: 'startup' } });
    await lifecycle.stop();
    throw err;
  }
}
