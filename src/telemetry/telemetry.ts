// What the composition root hands every layer that measures or reports: Prometheus metrics
// (always registered), a tracer (no-op unless SYNCV3_OTLP_URL) and an error reporter (no-op
// unless SYNCV3_SENTRY_DSN). The optional parts load their packages only when configured.
import { readFileSync } from 'node:fs';
import type { Config } from '../config.js';
import { type ErrorReporter, noopReporter, startSentry } from './error-reporting.js';
import type { Logger } from './logger.js';
import { createMetrics, type Metrics } from './metrics.js';
import { noopTracer, startTracing, type Tracer } from './tracing.js';

export interface Telemetry {
  metrics: Metrics;
  tracer: Tracer;
  errors: ErrorReporter;
}

export interface RunningTelemetry extends Telemetry {
  /** Flushes spans and error reports; the last thing to stop. */
  stop(): Promise<void>;
}

/** The Go proxy's service and tracer name, so existing trace queries keep working. */
const SERVICE_NAME = 'sliding-sync';

export function packageVersion(): string {
  try {
    // src/telemetry/ and dist/telemetry/ both sit two levels below package.json.
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

export async function startTelemetry(config: Pick<Config, 'prom' | 'otlp' | 'sentryDsn'>, logger: Logger): Promise<RunningTelemetry> {
  const version = packageVersion();
  // Sentry first, so a failure starting tracing is reported.
  const errors = config.sentryDsn ? await startSentry({ dsn: config.sentryDsn, release: `syncv3@${version}` }, logger) : noopReporter;
  let tracer = noopTracer;
  try {
    if (config.otlp) tracer = await startTracing({ ...config.otlp, serviceName: SERVICE_NAME, version }, logger);
  } catch (err) {
    await errors.close(2000);
    throw err;
  }
  const metrics = createMetrics({ processMetrics: config.prom !== undefined });
  return {
    metrics,
    tracer,
    errors,
    async stop() {
      await tracer.shutdown().catch((err: unknown) => logger.warn({ err }, 'flushing traces failed'));
      await errors.close(5000);
    },
  };
}
