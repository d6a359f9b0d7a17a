// Error reporting behind a small interface, so no layer imports Sentry: with SYNCV3_SENTRY_DSN
// unset everything gets `noopReporter` and @sentry/node is never loaded; with it set,
// startSentry() imports it on demand and reports unhandled errors (uncaught exceptions and
// unhandled rejections, which then still end the process as they would without Sentry) and
// whatever the proxy captures itself (failed polls, 500s), with the user and device as context.
//
// Access tokens never leave: every event passes through scrubEvent() before it is sent, which
// drops Authorization and Cookie headers, `access_token` query parameters, `Bearer …` strings,
// values of token-, secret- and password-named fields, and strings shaped like homeserver
// tokens (Synapse `syt_…`, MAS `mat_…`, refresh tokens). No integration that records requests,
// console output or outgoing HTTP is enabled, so there is little to scrub in the first place.
import type { Logger } from './logger.js';

export interface ErrorContext {
  user?: string;
  device?: string;
  tags?: Record<string, string>;
  extra?: Record<string, unknown>;
}

export interface ErrorReporter {
  readonly enabled: boolean;
  capture(err: unknown, context?: ErrorContext): void;
  /** Sends what is queued (waiting at most timeoutMs) and stops reporting. */
  close(timeoutMs: number): Promise<void>;
}

export const noopReporter: ErrorReporter = {
  enabled: false,
  capture() {},
  close: async () => {},
};

export interface SentryOptions {
  dsn: string;
  release: string;
}

const REDACTED = '[redacted]';
/** Field names whose string values are secrets wherever they appear. */
const SECRET_KEY = /token|secret|passw|authori[sz]ation|cookie|api[-_]?key|dsn/i;
const PATTERNS: [RegExp, string][] = [
  [/\b(bearer\s+)[^\s"',;]+/gi, `$1${REDACTED}`],
  [/\b(access_token=)[^&#\s"']*/gi, `$1${REDACTED}`],
  // Synapse (syt_/syr_), Matrix Authentication Service (mat_/mar_/mct_/mcr_) and similar tokens.
  [/\b(?:sy[tr]|ma[tr]|mc[tr])_[A-Za-z0-9_-]{8,}/g, REDACTED],
];

export function scrubString(value: string): string {
  let out = value;
  for (const [pattern, replacement] of PATTERNS) out = out.replace(pattern, replacement);
  return out;
}

function scrubValue(value: unknown, key: string | undefined, seen: WeakSet<object>): unknown {
  if (typeof value === 'string') {
    if (key !== undefined && SECRET_KEY.test(key)) return REDACTED;
    return scrubString(value);
  }
  if (typeof value !== 'object' || value === null || seen.has(value)) return value;
  seen.add(value);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = scrubValue(value[i], key, seen);
    return value;
  }
  const record = value as Record<string, unknown>;
  for (const k of Object.keys(record)) record[k] = scrubValue(record[k], k, seen);
  return value;
}

/** Removes anything token-like from a Sentry event, in place; returns it for beforeSend. */
export function scrubEvent<T extends object>(event: T): T {
  const request = (event as { request?: { headers?: Record<string, unknown>; cookies?: unknown } }).request;
  if (request?.headers) {
    for (const name of Object.keys(request.headers)) if (/^(authorization|cookie|set-cookie)$/i.test(name)) delete request.headers[name];
  }
  if (request) delete request.cookies;
  scrubValue(event, undefined, new WeakSet());
  return event;
}

export async function startSentry(opts: SentryOptions, logger: Logger): Promise<ErrorReporter> {
  const Sentry = await import('@sentry/node');
  const client = Sentry.initWithoutDefaultIntegrations({
    dsn: opts.dsn,
    release: opts.release,
    // Collect nothing from requests on our own; what we send is the error and the context we add.
    dataCollection: {
      userInfo: false,
      cookies: false,
      httpHeaders: false,
      httpBodies: [],
      urlQueryParams: false,
      databaseQueryData: false,
      stackFrameVariables: false,
    },
    // Tracing is OpenTelemetry's (SYNCV3_OTLP_URL); Sentry keeps to errors and registers no
    // tracer provider or module hooks of its own.
    enableOpenTelemetrySetup: false,
    enableRuntimeChannelInjection: false,
    integrations: [
      Sentry.onUncaughtExceptionIntegration(),
      // As Node does without Sentry: an unhandled rejection ends the process (after reporting).
      Sentry.onUnhandledRejectionIntegration({ mode: 'strict' }),
      Sentry.linkedErrorsIntegration(),
      Sentry.dedupeIntegration(),
      Sentry.functionToStringIntegration(),
      Sentry.nodeContextIntegration(),
    ],
    beforeSend: (event) => scrubEvent(event),
    beforeBreadcrumb: (breadcrumb) => scrubEvent(breadcrumb),
  });
  if (!client) throw new Error('Sentry did not initialise (invalid SYNCV3_SENTRY_DSN?)');
  logger.info({ host: new URL(opts.dsn).host }, 'reporting errors to Sentry');
  return {
    enabled: true,
    capture(err, context = {}) {
      const tags: Record<string, string> = { ...context.tags };
      if (context.device) tags.device_id = context.device;
      Sentry.captureException(err, {
        user: context.user ? { id: context.user } : undefined,
        tags,
        extra: context.extra,
      });
    },
    async close(timeoutMs) {
      await Sentry.close(timeoutMs);
    },
  };
}
