import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { loadMigrations, migrate, migrationStatus, SchemaError } from '../../../src/store/migrate.js';
import { createTestDatabase } from '../../support/db.js';

async function migrationsDir(t: TestContext, files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-migrations-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const [name, sql] of Object.entries(files)) await writeFile(path.join(dir, name), sql);
  return dir;
}

const ONE = { '0001_one.sql': 'CREATE TABLE one (id int PRIMARY KEY);' };
const TWO = { ...ONE, '0002_two.sql': 'CREATE TABLE two (id int PRIMARY KEY);' };

describe('migrations', () => {
  it('applies the real migrations to an empty database, then nothing on a second run', async (t) => {
    const { pool } = await createTestDatabase(t, { empty: true });
    const known = await loadMigrations();
    assert.ok(known.length >= 1);
    assert.deepEqual(
      await migrate(pool, known),
      known.map((m) => m.version),
    );
    assert.deepEqual(await migrate(pool, known), []);
    assert.deepEqual(await migrationStatus(pool, known), { current: known.length, latest: known.length });
    const { rows } = await pool.query(`SELECT to_regclass('devices') IS NOT NULL AS ok`);
    assert.equal(rows[0].ok, true);
  });

  it('applies only what is pending and records it', async (t) => {
    const { pool } = await createTestDatabase(t, { empty: true });
    await migrate(pool, await loadMigrations(await migrationsDir(t, ONE)));
    const applied = await migrate(pool, await loadMigrations(await migrationsDir(t, TWO)));
    assert.deepEqual(applied, [2]);
    const { rows } = await pool.query('SELECT version, name FROM syncv3_migrations ORDER BY version');
    assert.deepEqual(rows, [
      { version: 1, name: 'one' },
      { version: 2, name: 'two' },
    ]);
  });

  it('refuses a database migrated by newer code, with a clear message', async (t) => {
    const { pool } = await createTestDatabase(t, { empty: true });
    await migrate(pool, await loadMigrations(await migrationsDir(t, TWO)));
    const older = await loadMigrations(await migrationsDir(t, ONE));
    await assert.rejects(
      migrate(pool, older),
      (err: Error) => err instanceof SchemaError && /at version 2 \(two\).*only knows up to 1/.test(err.message),
    );
    await assert.rejects(migrationStatus(pool, older), SchemaError);
  });

  it('refuses a migration that was edited after it was applied', async (t) => {
    const { pool } = await createTestDatabase(t, { empty: true });
    await migrate(pool, await loadMigrations(await migrationsDir(t, ONE)));
    const edited = await loadMigrations(await migrationsDir(t, { '0001_one.sql': 'CREATE TABLE one (id bigint PRIMARY KEY);' }));
    await assert.rejects(migrate(pool, edited), /migration 1 \(one\) was changed after it was applied/);
  });

  it('rolls back a failing migration entirely, keeping the ones before it', async (t) => {
    const { pool } = await createTestDatabase(t, { empty: true });
    const dir = await migrationsDir(t, { ...ONE, '0002_bad.sql': 'CREATE TABLE half (id int); SELECT no_such_function();' });
    await assert.rejects(migrate(pool, await loadMigrations(dir)), /migration 2 \(bad\) failed/);
    const { rows } = await pool.query(`SELECT to_regclass('half') IS NULL AS gone, (SELECT max(version) FROM syncv3_migrations) AS v`);
    assert.deepEqual(rows[0], { gone: true, v: 1 });
  });

  it('lets two processes migrate at once without racing (advisory lock)', async (t) => {
    const { pool } = await createTestDatabase(t, { empty: true });
    const known = await loadMigrations();
    const results = await Promise.all([migrate(pool, known), migrate(pool, known), migrate(pool, known)]);
    assert.deepEqual(
      results.flat().sort(),
      known.map((m) => m.version),
    );
  });

  it('rejects files that break the naming or numbering', async (t) => {
    await assert.rejects(loadMigrations(await migrationsDir(t, { '0002_two.sql': '' })), /breaks the numbering/);
    await assert.rejects(loadMigrations(await migrationsDir(t, { '1_x.sql': '' })), /NNNN_snake_case/);
  });
});
