// Forward-only schema migrations: numbered `.sql` files in migrations/, each applied in its own
// transaction and recorded with a checksum. A session advisory lock serialises processes that
// start together (N proxies over one database must not both apply 0003). A database that is
// ahead of the code, or whose applied migration text differs from ours, is refused: running
// old code on a newer schema, or a schema nobody can reproduce, corrupts data quietly.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import type { Queryable } from './db.js';

/** src/store/ and dist/store/ both sit two levels below the package root. */
const DEFAULT_MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));

// Any fixed 64-bit number shared by every version of the proxy; "syncv3" in ASCII.
const MIGRATION_LOCK_KEY = 0x73796e637633;

export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

export class SchemaError extends Error {
  override name = 'SchemaError';
}

export async function loadMigrations(dir = DEFAULT_MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort();
  const migrations: Migration[] = [];
  for (const file of files) {
    const match = /^(\d{4})_([a-z0-9_]+)\.sql$/.exec(file);
    if (!match) throw new SchemaError(`migration file ${file} is not named NNNN_snake_case.sql`);
    const version = Number(match[1]);
    if (version !== migrations.length + 1)
      throw new SchemaError(`migration ${file} breaks the numbering (expected ${migrations.length + 1})`);
    const sql = await readFile(path.join(dir, file), 'utf8');
    migrations.push({ version, name: match[2] as string, sql, checksum: createHash('sha256').update(sql).digest('hex') });
  }
  return migrations;
}

const CREATE_LEDGER = `CREATE TABLE IF NOT EXISTS syncv3_migrations (
  version integer PRIMARY KEY,
  name text NOT NULL,
  checksum text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
)`;

interface Applied {
  version: number;
  name: string;
  checksum: string;
}

async function appliedMigrations(db: Queryable): Promise<Applied[]> {
  const exists = await db.query<{ exists: boolean }>(`SELECT to_regclass('syncv3_migrations') IS NOT NULL AS exists`);
  if (!exists.rows[0]?.exists) return [];
  const { rows } = await db.query<Applied>('SELECT version, name, checksum FROM syncv3_migrations ORDER BY version');
  return rows;
}

/** Throws when the database cannot be served by this code; returns the migrations still to apply. */
function pending(known: Migration[], applied: Applied[]): Migration[] {
  const newest = applied.at(-1);
  if (newest && newest.version > known.length) {
    throw new SchemaError(
      `the database schema is at version ${newest.version} (${newest.name}) but this proxy only knows up to ${known.length}: ` +
        'it was migrated by a newer release; run that release or restore a backup',
    );
  }
  for (const a of applied) {
    const k = known[a.version - 1];
    if (k && k.checksum !== a.checksum) {
      throw new SchemaError(`migration ${a.version} (${a.name}) was changed after it was applied; migrations are forward-only`);
    }
  }
  return known.slice(applied.length);
}

export interface MigrationStatus {
  current: number;
  latest: number;
}

/** For /ready: where the database stands, without changing it. Throws SchemaError as migrate() would. */
export async function migrationStatus(db: Queryable, known: Migration[]): Promise<MigrationStatus> {
  const applied = await appliedMigrations(db);
  pending(known, applied);
  return { current: applied.length, latest: known.length };
}

/** Applies every pending migration; returns the versions applied. */
export async function migrate(pool: pg.Pool, known: Migration[]): Promise<number[]> {
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    await client.query(CREATE_LEDGER);
    const todo = pending(known, await appliedMigrations(client));
    for (const m of todo) {
      await client.query('BEGIN');
      try {
        await client.query(m.sql);
        await client.query('INSERT INTO syncv3_migrations (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.name, m.checksum]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK');
        throw new SchemaError(`migration ${m.version} (${m.name}) failed: ${(err as Error).message}`, { cause: err });
      }
    }
    return todo.map((m) => m.version);
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]).catch(() => undefined);
    client.release();
  }
}
