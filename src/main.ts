// The process entry point: read the environment, start the proxy, and stop it on a signal.
// The first SIGTERM/SIGINT drains gracefully; a second one exits at once.
// First, before any other module runs: refuse an unsupported Node.js with a clear message.
import './node-version.js';
import { ConfigError, loadConfig } from './config.js';
import { startProxy } from './proxy.js';
import { StartupError } from './startup-error.js';
import { SchemaError } from './store/migrate.js';
import { createLogger } from './telemetry/logger.js';

async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(
      `${err.message}\n\nEvery variable is described in .env.example (in the repository, and /app/.env.example in the image).\n`,
    );
    process.exit(1);
  }
  const logger = createLogger({ level: config.logLevel });
  for (const warning of config.warnings) logger.warn(warning);

  let stopping = false;
  let stop: (() => Promise<void>) | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting immediately');
      process.exit(130);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    void (stop?.() ?? Promise.resolve()).then(
      () => process.exit(0),
      (err) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // A promise failing with nobody awaiting it (say, a query cut short as the database stops under
  // us) is a bug to log, not a reason to drop every client's connection: /ready reports the outage.
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled promise rejection'));

  try {
    const proxy = await startProxy(config, logger);
    stop = proxy.stop;
    if (stopping) await proxy.stop().then(() => process.exit(0));
  } catch (err) {
    if (err instanceof SchemaError || err instanceof StartupError) logger.fatal(`failed to start: ${err.message}`);
    else logger.fatal({ err }, 'failed to start');
    // Let pino flush its transport before exiting.
    setTimeout(() => process.exit(1), 100);
  }
}

await main();
