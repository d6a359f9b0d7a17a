// `npm run migrate`: apply pending migrations to SYNCV3_DB and exit, for operators who migrate
// as a separate deployment step before rolling out new proxies.
import { databaseUrl, VARIABLES } from './config.js';
import { openPool } from './store/db.js';
import { loadMigrations, migrate, SchemaError } from './store/migrate.js';
import { createLogger } from './telemetry/logger.js';

const logger = createLogger({ level: 'info' });
const raw = process.env.SYNCV3_DB?.trim();
if (!raw) {
  process.stderr.write(
    'SYNCV3_DB is required: the PostgreSQL connection string to migrate (the embedded database migrates itself on start)\n',
  );
  process.exit(1);
}
const parsed = databaseUrl(raw);
if ('problem' in parsed) {
  process.stderr.write(`SYNCV3_DB ${parsed.problem}. SYNCV3_DB: ${VARIABLES.SYNCV3_DB}\n`);
  process.exit(1);
}
const connectionString = parsed.url;
let pool: Awaited<ReturnType<typeof openPool>>;
try {
  pool = await openPool({ connectionString, max: 1, idleTimeoutMs: 1000 }, logger);
} catch (err) {
  process.stderr.write(`SYNCV3_DB: cannot use the PostgreSQL database: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
try {
  const migrations = await loadMigrations();
  const applied = await migrate(pool, migrations);
  logger.info({ applied, schemaVersion: migrations.length }, applied.length ? 'migrations applied' : 'nothing to apply');
} catch (err) {
  logger.fatal(err instanceof SchemaError ? err.message : { err }, 'migration failed');
  process.exitCode = 1;
} finally {
  await pool.end();
}
