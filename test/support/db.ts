// A fresh, migrated database per test file, cloned from the template that scripts/run-tests.ts
// prepared once for the run (CREATE DATABASE … TEMPLATE is a file copy: milliseconds, not the
// seconds of replaying migrations).
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import pg from 'pg';
import { createPool, type Pool } from '../../src/store/db.js';
import { createLogger } from '../../src/telemetry/logger.js';

export const testLogger = createLogger({ level: (process.env.SYNCV3_TEST_LOG_LEVEL as 'info' | undefined) ?? 'fatal', pretty: false });

export function serverUrl(): string {
  const url = process.env.SYNCV3_TEST_DB;
  if (!url) throw new Error('SYNCV3_TEST_DB is unset: run tests through `npm test`, which provides a database');
  return url;
}

/** The connection string of `database` on the test server. */
export function databaseUrl(database: string): string {
  const url = new URL(serverUrl());
  url.pathname = `/${database}`;
  return url.href;
}

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: serverUrl() });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export interface TestDatabase {
  name: string;
  url: string;
  pool: Pool;
  /** Drops the database (done automatically after the test unless `dropManually`). */
  drop(): Promise<void>;
  /** Services using this database, stopped before it is dropped. */
  users: Set<() => Promise<void>>;
}

/**
 * Creates a database for this test (migrated, unless `empty`), dropped when the test ends.
 * Names are random so parallel test files on one server never meet.
 */
export async function createTestDatabase(t: TestContext, opts: { empty?: boolean; dropManually?: boolean } = {}): Promise<TestDatabase> {
  const name = `syncv3_test_${randomBytes(6).toString('hex')}`;
  const template = opts.empty ? 'template0' : process.env.SYNCV3_TEST_TEMPLATE;
  if (!template) throw new Error('SYNCV3_TEST_TEMPLATE is unset: run tests through `npm test`');
  await admin((c) => c.query(`CREATE DATABASE ${name} TEMPLATE ${pg.escapeIdentifier(template)}`));
  const url = databaseUrl(name);
  const pool = createPool({ connectionString: url, max: 10, idleTimeoutMs: 10_000 }, testLogger);
  let dropped: Promise<void> | undefined;
  const users = new Set<() => Promise<void>>();
  const drop = () => {
    dropped ??= (async () => {
      await Promise.all([...users].map((stop) => stop()));
      await pool.end();
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    })();
    return dropped;
  };
  // node:test runs after-hooks in registration order: callers that start services on this
  // database drop it themselves, after stopping them.
  if (!opts.dropManually) t.after(drop);
  return { name, url, pool, drop, users };
}
