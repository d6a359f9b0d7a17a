// `npm test`: provide a real PostgreSQL, prepare a migrated template database once, then run
// node's test runner over the chosen tiers (default: unit, integration, e2e) or files.
//
// The e2e tier runs after the others, in a run of its own: first unit and integration together,
// then e2e, so a failure is attributed to its tier by each run's own summary, and the real-Synapse
// tests do not compete with the rest for the cores. Both runs happen even when the first fails.
//
// PostgreSQL: SYNCV3_TEST_DB when set (e.g. postgres://postgres@127.0.0.1:5432/postgres), else an
// embedded server started for this run in a temporary directory and deleted afterwards.
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { createPool } from '../src/store/db.js';
import { loadMigrations, migrate } from '../src/store/migrate.js';
import { createLogger } from '../src/telemetry/logger.js';
import { startTestPostgres } from '../test/support/test-postgres.js';

const TIERS = ['unit', 'integration', 'e2e'] as const;
const logger = createLogger({ level: 'warn', pretty: false });

async function withAdmin(url: string, sql: string) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

let interrupted = false;

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: 'inherit', env });
    const forward = (sig: NodeJS.Signals) => {
      interrupted = true;
      child.kill(sig);
    };
    process.on('SIGINT', forward).on('SIGTERM', forward);
    child.on('exit', (code, signal) => {
      process.off('SIGINT', forward).off('SIGTERM', forward);
      resolve(code ?? (signal ? 1 : 0));
    });
  });
}

const isE2e = (file: string) => path.resolve(file).startsWith(`${path.resolve('test/e2e')}${path.sep}`);

async function main() {
  const args = process.argv.slice(2);
  const tiers = args.filter((a) => (TIERS as readonly string[]).includes(a));
  const files = args.filter((a) => a.endsWith('.ts'));
  const selected = tiers.length || files.length ? tiers : [...TIERS];
  // Run by run: unit and integration (tiers and files) first, then e2e on its own.
  const runs = [
    {
      name: selected.filter((t) => t !== 'e2e').join(' ') || 'selected files',
      patterns: [...selected.filter((t) => t !== 'e2e').map((t) => `test/${t}/**/*.test.ts`), ...files.filter((f) => !isE2e(f))],
    },
    { name: 'e2e', patterns: [...(selected.includes('e2e') ? ['test/e2e/**/*.test.ts'] : []), ...files.filter(isE2e)] },
  ].filter((r) => r.patterns.length > 0);

  if (runs.some((r) => r.name === 'e2e')) {
    // The e2e tier runs the built proxy as a child process, as operators do.
    const built = await run(process.execPath, [path.resolve('node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], process.env);
    if (built !== 0) return built;
  }

  const postgres = await startTestPostgres(logger);
  const serverUrl = postgres.url;
  console.log(
    postgres.embedded
      ? 'test database: embedded PostgreSQL (set SYNCV3_TEST_DB to use another)'
      : `test database: ${new URL(serverUrl).host} (SYNCV3_TEST_DB)`,
  );

  const template = `syncv3_test_template_${process.pid}`;
  try {
    await withAdmin(serverUrl, `DROP DATABASE IF EXISTS ${template}`);
    await withAdmin(serverUrl, `CREATE DATABASE ${template}`);
    const templateUrl = new URL(serverUrl);
    templateUrl.pathname = `/${template}`;
    const pool = createPool({ connectionString: templateUrl.href, max: 1, idleTimeoutMs: 1000 }, logger);
    await migrate(pool, await loadMigrations());
    await pool.end();

    const env = { ...process.env, SYNCV3_TEST_DB: serverUrl, SYNCV3_TEST_TEMPLATE: template };
    const concurrency = process.env.SYNCV3_TEST_CONCURRENCY ?? String(Math.max(2, os.availableParallelism()));
    const outcomes: string[] = [];
    let exitCode = 0;
    for (const { name, patterns } of runs) {
      if (interrupted) break;
      if (runs.length > 1) console.log(`\n▶ run-tests: ${name}\n`);
      const code = await run(
        process.execPath,
        ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-timeout=600000', ...patterns],
        env,
      );
      outcomes.push(`${name}: ${code === 0 ? 'passed' : `FAILED (exit ${code})`}`);
      exitCode ||= code;
    }
    if (runs.length > 1) console.log(`\nrun-tests: ${outcomes.join('; ')}`);
    return exitCode;
  } finally {
    await withAdmin(serverUrl, `DROP DATABASE IF EXISTS ${template} WITH (FORCE)`).catch(() => undefined);
    await postgres.stop();
  }
}

process.exitCode = await main();
