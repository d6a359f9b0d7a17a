// A PostgreSQL server for a test or benchmark run: SYNCV3_TEST_DB when set, else an embedded
// server in a temporary directory, deleted afterwards.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres } from '../../src/store/embedded-postgres.js';
import type { Logger } from '../../src/telemetry/logger.js';

export interface TestPostgres {
  /** Connection string of the server's maintenance database. */
  url: string;
  embedded: boolean;
  stop(): Promise<void>;
}

export async function startTestPostgres(logger: Logger): Promise<TestPostgres> {
  const fromEnv = process.env.SYNCV3_TEST_DB;
  if (fromEnv) return { url: fromEnv, embedded: false, stop: async () => {} };
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-test-pg-'));
  const server = await startEmbeddedPostgres({ dataDir: dir, ephemeral: true }, logger);
  return {
    url: server.connectionString,
    embedded: true,
    async stop() {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
