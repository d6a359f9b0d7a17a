// Runs the whole proxy in-process on a loopback port against a fresh test database.
import type { TestContext } from 'node:test';
import { type Config, loadConfig } from '../../src/config.js';
import { type ProxyOptions, type RunningProxy, startProxy } from '../../src/proxy.js';
import type { Logger } from '../../src/telemetry/logger.js';
import { createTestDatabase, type TestDatabase, testLogger } from './db.js';

export interface TestProxy extends RunningProxy {
  db: TestDatabase;
  config: Config;
}

export async function startTestProxy(
  t: TestContext,
  env: Record<string, string> = {},
  opts: ProxyOptions & { db?: TestDatabase; logger?: Logger } = {},
): Promise<TestProxy> {
  const ownDb = opts.db === undefined;
  const db = opts.db ?? (await createTestDatabase(t, { dropManually: true }));
  const config = loadConfig({
    SYNCV3_SERVER: 'http://127.0.0.1:1',
    SYNCV3_DB: db.url,
    SYNCV3_SECRET: 'test-secret',
    SYNCV3_BINDADDR: '127.0.0.1:0',
    SYNCV3_SHUTDOWN_GRACE_SECS: '1',
    ...env,
  });
  const { db: _db, logger = testLogger, ...proxyOptions } = opts;
  const proxy = await startProxy(config, logger, proxyOptions).catch(async (err) => {
    if (ownDb) await db.drop();
    throw err;
  });
  // The database's owner stops every proxy sharing it (e.g. a restarted one) before dropping it.
  db.users.add(proxy.stop);
  t.after(async () => {
    await proxy.stop();
    if (ownDb) await db.drop();
  });
  return { ...proxy, db, config };
}
