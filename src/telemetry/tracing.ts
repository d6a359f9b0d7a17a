// Tracing behind a small interface of our own, so the rest of the proxy never imports
// OpenTelemetry: with SYNCV3_OTLP_URL unset every layer gets `noopTracer` and no OpenTelemetry
// module is ever loaded; with it set, startTracing() imports the SDK and the OTLP/HTTP exporter
// on demand and spans go to `<SYNCV3_OTLP_URL>/v1/traces` (basic auth when a user is set).
//
// Like the Go proxy: tracer and service name `sliding-sync`, span attributes `user_id`,
// `device_id`, `conn_id`. Spans nest through AsyncLocalStorage, so an SQL span started while a
// poll or a request runs becomes its child without anything being passed down.
import type * as OtelApi from '@opentelemetry/api';
import type { Logger } from './logger.js';

export type SpanAttributes = Record<string, string | number | boolean | undefined>;
export type SpanKind = 'internal' | 'server' | 'client';

export interface Span {
  setAttributes(attributes: SpanAttributes): void;
  /** Marks the span as failed with this error (recorded as an exception event). */
  fail(err: unknown): void;
}

export interface Tracer {
  /** False for the no-op tracer: callers may skip work that only feeds spans. */
  readonly enabled: boolean;
  /** Runs fn in a new span, a child of the active one; spans started inside fn are its children. */
  run<T>(name: string, attributes: SpanAttributes, fn: (span: Span) => Promise<T>, kind?: SpanKind): Promise<T>;
  /** Adds W3C trace context headers (traceparent) of the active span to outgoing request headers. */
  inject(headers: Record<string, string>): void;
  /** Exports what is buffered and unregisters the SDK. */
  shutdown(): Promise<void>;
}

const NOOP_SPAN: Span = { setAttributes() {}, fail() {} };

export const noopTracer: Tracer = {
  enabled: false,
  run: (_name, _attributes, fn) => fn(NOOP_SPAN),
  inject() {},
  shutdown: async () => {},
};

export interface TracingOptions {
  /** SYNCV3_OTLP_URL: the collector's base URL; `/v1/traces` is appended. */
  url: string;
  username: string | undefined;
  password: string | undefined;
  serviceName: string;
  version: string;
}

/** The OTLP/HTTP traces endpoint for a collector base URL (tolerating one that already names it). */
export function tracesUrl(base: string): string {
  const trimmed = base.replace(/\/+$/, '');
  return trimmed.endsWith('/v1/traces') ? trimmed : `${trimmed}/v1/traces`;
}

function clean(attributes: SpanAttributes): OtelApi.Attributes {
  const out: OtelApi.Attributes = {};
  for (const [k, v] of Object.entries(attributes)) if (v !== undefined) out[k] = v;
  return out;
}

export async function startTracing(opts: TracingOptions, logger: Logger): Promise<Tracer> {
  const [api, { NodeSDK }, { OTLPTraceExporter }] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-node'),
    import('@opentelemetry/exporter-trace-otlp-http'),
  ]);
  const headers: Record<string, string> = {};
  if (opts.username !== undefined) {
    headers.authorization = `Basic ${Buffer.from(`${opts.username}:${opts.password ?? ''}`).toString('base64')}`;
  }
  const url = tracesUrl(opts.url);
  const sdk = new NodeSDK({
    serviceName: opts.serviceName,
    traceExporter: new OTLPTraceExporter({ url, headers }),
    // Traces only: metrics are Prometheus's job, logs go to stdout. Empty lists stop the SDK
    // from configuring OTLP metric and log exporters from OTEL_* defaults.
    metricReaders: [],
    logRecordProcessors: [],
    // pg and undici calls get spans by hand (store/db.ts, upstream/): the instrumentation
    // packages are not dependencies, and under ESM they would need loader hooks registered
    // (node --import) before pg and undici load.
    instrumentations: [],
  });
  sdk.start();
  const tracer = api.trace.getTracer(opts.serviceName, opts.version);
  const kinds: Record<SpanKind, OtelApi.SpanKind> = {
    internal: api.SpanKind.INTERNAL,
    server: api.SpanKind.SERVER,
    client: api.SpanKind.CLIENT,
  };
  const wrap = (span: OtelApi.Span): Span => ({
    setAttributes: (attributes) => span.setAttributes(clean(attributes)),
    fail(err) {
      const error = err instanceof Error ? err : new Error(String(err));
      span.recordException(error);
      span.setStatus({ code: api.SpanStatusCode.ERROR, message: error.message });
    },
  });
  logger.info({ host: new URL(url).host }, 'exporting traces with OTLP/HTTP');
  return {
    enabled: true,
    run(name, attributes, fn, kind = 'internal') {
      return tracer.startActiveSpan(name, { attributes: clean(attributes), kind: kinds[kind] }, async (otelSpan) => {
        const span = wrap(otelSpan);
        try {
          return await fn(span);
        } catch (err) {
          span.fail(err);
          throw err;
        } finally {
          otelSpan.end();
        }
      });
    },
    inject(carrier) {
      api.propagation.inject(api.context.active(), carrier);
    },
    async shutdown() {
      try {
        await sdk.shutdown();
      } finally {
        // Unregister the globals so a later start in the same process (tests) can register again.
        api.trace.disable();
        api.context.disable();
        api.propagation.disable();
      }
    },
  };
}
