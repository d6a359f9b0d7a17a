// Every SYNCV3_* environment variable, parsed and checked in one place.
//
// Names, meanings and defaults follow the archived Go proxy (matrix-org/sliding-sync) so that
// this proxy is a drop-in replacement; variables that the Go proxy did not have are marked
// "ours" in VARIABLES. A bad environment is reported as ONE message listing every problem,
// because an operator fixing a container's env one variable per restart is a miserable loop.
import { accessSync, constants, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { z } from 'zod';

/** Where something listens or connects: TCP host and port, or a unix socket path. */
export type Address = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

/** The upstream homeserver: an http(s) base URL, or a unix socket that speaks plain HTTP. */
export type Upstream = { kind: 'url'; baseUrl: string } | { kind: 'unix'; path: string };

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

/** One line per variable: shown in error messages and kept in step with .env.example by a test. */
export const VARIABLES = {
  SYNCV3_SERVER: 'the homeserver client-server API: a base URL (https://matrix.example.org) or a unix socket path',
  SYNCV3_DB: 'PostgreSQL connection: a libpq string (user=… dbname=… host=…) or a postgres:// URL; unset = embedded PostgreSQL',
  SYNCV3_SECRET:
    'secret that encrypts stored access tokens; must never change; generated in SYNCV3_DATA_DIR if unset with the embedded database',
  SYNCV3_BINDADDR:
    'where the client API listens: host:port (:port = every interface, IPv6 and IPv4) or a unix socket path, made writable for all as the Go proxy did (default 0.0.0.0:8008)',
  SYNCV3_TLS_CERT: 'PEM certificate file; serve HTTPS (set together with SYNCV3_TLS_KEY)',
  SYNCV3_TLS_KEY: 'PEM private key file; serve HTTPS (set together with SYNCV3_TLS_CERT)',
  SYNCV3_PPROF: 'host:port of a separate debug listener serving CPU profiles and heap snapshots (unset = off)',
  SYNCV3_PROM: 'host:port of a separate listener serving Prometheus /metrics (unset = off)',
  SYNCV3_OTLP_URL: 'OTLP/HTTP endpoint that receives traces, e.g. http://otel-collector:4318 (unset = tracing off)',
  SYNCV3_OTLP_USERNAME: 'basic-auth user for SYNCV3_OTLP_URL (set together with SYNCV3_OTLP_PASSWORD)',
  SYNCV3_OTLP_PASSWORD: 'basic-auth password for SYNCV3_OTLP_URL (set together with SYNCV3_OTLP_USERNAME)',
  SYNCV3_SENTRY_DSN: 'Sentry DSN that receives errors (unset = off)',
  SYNCV3_LOG_LEVEL: 'trace, debug, info, warn, err (or error) or fatal (default info)',
  SYNCV3_DEBUG: '1 or true: trace logging, whatever SYNCV3_LOG_LEVEL says (default off)',
  SYNCV3_MAX_DB_CONN: 'maximum PostgreSQL connections in the pool; 0 = the default of 20',
  SYNCV3_DB_IDLE_TIMEOUT_SECS: 'seconds an idle PostgreSQL connection is kept open (default 3600)',
  SYNCV3_HTTP_TIMEOUT_SECS: 'timeout of requests to the homeserver, long polls included (default 300)',
  SYNCV3_HTTP_INITIAL_TIMEOUT_SECS: "timeout of a device's first (initial) /sync to the homeserver (default 1800)",
  // ours
  SYNCV3_DATA_DIR: 'ours: directory for the embedded database and the generated secret (default ./data)',
  SYNCV3_REQUIRE_PERSISTENT_DATA:
    'ours: 1 or true: in a container, refuse to run the embedded database unless SYNCV3_DATA_DIR is on a volume that outlives it (the image sets 1; 0 runs a throwaway container)',
  SYNCV3_DB_STARTUP_TIMEOUT_SECS:
    'ours: seconds to keep retrying, with backoff, a database that is not reachable yet at startup (default 60; 0 = fail at once)',
  SYNCV3_SHUTDOWN_GRACE_SECS:
    'ours: seconds in-flight requests get to finish on SIGTERM before connections are cut; waiting long-polls are answered at once (default 5)',
  SYNCV3_MAX_CONNECTIONS_PER_DEVICE:
    'ours: sliding sync connections (conn_ids) kept per device; the least recently used goes first (default 10, at least 3)',
  SYNCV3_CONNECTION_TTL_SECS:
    "ours: seconds an unused connection is kept; later its pos gets M_UNKNOWN_POS (default 604800, Synapse's 7 days)",
  SYNCV3_TRUSTED_PROXIES:
    'ours: comma-separated IPs or CIDRs of reverse proxies whose X-Forwarded-For/-Proto/-Host are believed (default none)',
  SYNCV3_CLUSTER:
    'ours: 1 or a process name (letters, digits, . _ -): run as one of several processes over one SYNCV3_DB, sharing pollers and the bus (default off: one process per database)',
} as const;

export type VariableName = keyof typeof VARIABLES;

const LOG_LEVELS = {
  trace: 'trace',
  debug: 'debug',
  info: 'info',
  warn: 'warn',
  err: 'error',
  error: 'error',
  fatal: 'fatal',
} as const;

const unset = (v: unknown) => (typeof v === 'string' && v.trim() === '' ? undefined : v);
const optionalString = z.preprocess(unset, z.string().optional());

function integer(defaultValue: number, min: number, max = Number.MAX_SAFE_INTEGER) {
  return z.preprocess(unset, z.string().prefault(String(defaultValue))).transform((raw, ctx) => {
    const n = /^\s*\d+\s*$/.test(raw) ? Number(raw) : Number.NaN;
    if (!(n >= min && n <= max)) {
      ctx.addIssue({
        code: 'custom',
        message: `"${raw}" is not a whole number from ${min} to ${max}`,
      });
      return z.NEVER;
    }
    return n;
  });
}

export function parseAddress(raw: string): Address | undefined {
  if (raw.startsWith('/') || raw.startsWith('./')) return { kind: 'unix', path: raw };
  const match = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(raw);
  if (!match) return undefined;
  const port = Number(match[3]);
  if (port > 65535) return undefined;
  // `:port` is every interface, IPv6 and IPv4 alike, as Go's listener reads it (Node's `::` is dual-stack).
  return { kind: 'tcp', host: match[1] ?? (match[2] || '::'), port };
}

const address = z.string().transform((raw, ctx) => {
  const parsed = parseAddress(raw.trim());
  if (!parsed) {
    ctx.addIssue({
      code: 'custom',
      message: `"${raw}" is neither host:port nor an absolute unix socket path`,
    });
    return z.NEVER;
  }
  return parsed;
});

const upstream = z.string().transform((raw, ctx): Upstream => {
  const value = raw.trim();
  if (value.startsWith('/')) return { kind: 'unix', path: value };
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    ctx.addIssue({
      code: 'custom',
      message: `"${raw}" is neither an http(s) URL nor an absolute unix socket path`,
    });
    return z.NEVER;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    ctx.addIssue({
      code: 'custom',
      message: `must use http or https, not ${url.protocol}`,
    });
    return z.NEVER;
  }
  return { kind: 'url', baseUrl: url.href.replace(/\/+$/, '') };
});

/**
 * Parses a libpq `keyword=value` string (values bare, or single-quoted; `\` escapes the next
 * character), as the Go proxy's lib/pq accepted. Undefined when it is not one.
 */
function parseLibpq(raw: string): [string, string][] | undefined {
  const pairs: [string, string][] = [];
  const space = (c: string | undefined) => c !== undefined && /\s/.test(c);
  let i = 0;
  while (space(raw[i])) i++;
  if (i === raw.length) return undefined;
  while (i < raw.length) {
    const key = /^[A-Za-z_][A-Za-z0-9_]*/.exec(raw.slice(i))?.[0];
    if (!key) return undefined;
    i += key.length;
    while (space(raw[i])) i++;
    if (raw[i] !== '=') return undefined;
    i++;
    while (space(raw[i])) i++;
    let value = '';
    const quoted = raw[i] === "'";
    if (quoted) i++;
    for (;;) {
      const c = raw[i];
      if (c === undefined) {
        if (quoted) return undefined; // unterminated quote
        break;
      }
      if (quoted ? c === "'" : space(c)) {
        if (quoted) i++;
        break;
      }
      if (!quoted && c === "'") return undefined;
      if (c === '\\') {
        const next = raw[i + 1];
        if (next === undefined) return undefined;
        value += next;
        i += 2;
      } else {
        value += c;
        i++;
      }
    }
    pairs.push([key, value]);
    const before = i;
    while (space(raw[i])) i++;
    if (i < raw.length && i === before) return undefined; // pairs are separated by whitespace
  }
  return pairs;
}

/** The postgres:// URL meaning what a libpq string means, in the form node-postgres reads. */
function libpqToUrl(pairs: [string, string][]): string {
  const params = new Map(pairs);
  const take = (key: string) => {
    const value = params.get(key);
    params.delete(key);
    return value || undefined;
  };
  const user = take('user');
  const password = take('password');
  const dbname = take('dbname');
  const hostaddr = take('hostaddr');
  const host = take('host') ?? hostaddr;
  const port = take('port');
  const enc = encodeURIComponent;
  const auth = user || password ? `${user ? enc(user) : ''}${password ? `:${enc(password)}` : ''}@` : '';
  let authority = '';
  if (host && !host.startsWith('/')) authority = `${host.includes(':') ? `[${host}]` : host}${port ? `:${port}` : ''}`;
  else {
    // A unix socket directory (or no host) cannot go in the URL's authority: node-postgres reads both from the query.
    if (host) params.set('host', host);
    if (port) params.set('port', port);
  }
  const query = new URLSearchParams([...params]).toString();
  return `postgres://${auth}${authority}/${dbname ? enc(dbname) : ''}${query ? `?${query}` : ''}`;
}

/**
 * SYNCV3_DB as the postgres:// URL node-postgres reads (it reads no libpq strings), or why it
 * is not one. Never echoes the value: it may carry a password.
 */
export function databaseUrl(raw: string): { url: string } | { problem: string } {
  const value = raw.trim();
  if (/^postgres(?:ql)?:\/\//i.test(value)) {
    return URL.canParse(value) ? { url: value } : { problem: 'is not a valid postgres:// URL (its value is not shown)' };
  }
  const pairs = parseLibpq(value);
  if (pairs) return { url: libpqToUrl(pairs) };
  return { problem: 'is neither a postgres:// (or postgresql://) URL nor a libpq key=value string (its value is not shown)' };
}

const database = z.string().transform((raw, ctx) => {
  const parsed = databaseUrl(raw);
  if ('url' in parsed) return parsed.url;
  ctx.addIssue({ code: 'custom', message: parsed.problem });
  return z.NEVER;
});

const httpUrl = z.url({
  protocol: /^https?$/,
  error: 'must be an http(s) URL',
});

const flag = z.preprocess(
  (v) => (typeof v === 'string' ? v.trim().toLowerCase() || undefined : v),
  z.enum(['1', '0', 'true', 'false', 'yes', 'no']).default('0'),
);
const isOn = (value: string) => ['1', 'true', 'yes'].includes(value);
/** `10.0.0.0/8, 192.0.2.7, fd00::/8`: each entry an address or a CIDR block, normalised to `addr/prefix`. */
const ipRanges = z.string().transform((raw, ctx) => {
  const out: string[] = [];
  for (const entry of raw
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean)) {
    const [address = '', prefix, extra] = entry.split('/');
    const family = isIP(address);
    const bits = family === 4 ? 32 : 128;
    const length = prefix === undefined ? bits : /^\d{1,3}$/.test(prefix) ? Number(prefix) : Number.NaN;
    if (!family || extra !== undefined || !(length >= 0 && length <= bits)) {
      ctx.addIssue({ code: 'custom', message: `"${entry}" is neither an IP address nor a CIDR block` });
      return z.NEVER;
    }
    out.push(`${address}/${length}`);
  }
  return out;
});

const schema = z.object({
  SYNCV3_SERVER: z.preprocess(unset, upstream),
  SYNCV3_DB: z.preprocess(unset, database.optional()),
  SYNCV3_SECRET: optionalString,
  SYNCV3_BINDADDR: z.preprocess(unset, address.prefault('0.0.0.0:8008')),
  SYNCV3_TLS_CERT: optionalString,
  SYNCV3_TLS_KEY: optionalString,
  SYNCV3_PPROF: z.preprocess(unset, address.optional()),
  SYNCV3_PROM: z.preprocess(unset, address.optional()),
  SYNCV3_OTLP_URL: z.preprocess(unset, httpUrl.optional()),
  SYNCV3_OTLP_USERNAME: optionalString,
  SYNCV3_OTLP_PASSWORD: optionalString,
  SYNCV3_SENTRY_DSN: z.preprocess(unset, httpUrl.optional()),
  SYNCV3_LOG_LEVEL: z.preprocess(
    (v) => (typeof v === 'string' ? v.trim().toLowerCase() || undefined : v),
    z.enum(Object.keys(LOG_LEVELS) as [keyof typeof LOG_LEVELS]).default('info'),
  ),
  SYNCV3_DEBUG: flag,
  SYNCV3_MAX_DB_CONN: integer(0, 0, 10_000),
  SYNCV3_DB_IDLE_TIMEOUT_SECS: integer(3600, 1),
  SYNCV3_HTTP_TIMEOUT_SECS: integer(300, 1),
  SYNCV3_HTTP_INITIAL_TIMEOUT_SECS: integer(1800, 1),
  SYNCV3_DATA_DIR: z.preprocess(unset, z.string().default('./data')),
  SYNCV3_REQUIRE_PERSISTENT_DATA: flag,
  SYNCV3_DB_STARTUP_TIMEOUT_SECS: integer(60, 0, 3600),
  SYNCV3_SHUTDOWN_GRACE_SECS: integer(5, 0, 3600),
  // Element X alone keeps three connections per device (room-list, encryption, notifications).
  SYNCV3_MAX_CONNECTIONS_PER_DEVICE: integer(10, 3, 1000),
  SYNCV3_CONNECTION_TTL_SECS: integer(604_800, 60),
  SYNCV3_TRUSTED_PROXIES: z.preprocess(unset, ipRanges.default([])),
  SYNCV3_CLUSTER: z.preprocess(
    unset,
    z
      .string()
      .trim()
      .regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 0, 1, or a process name of up to 64 letters, digits, ".", "_" or "-"')
      .optional(),
  ),
});

/** Rules between variables, checked on the raw values so they are reported with the rest. */
function crossVariableProblems(env: Record<string, string | undefined>): [VariableName, string][] {
  const isSet = (name: VariableName) => Boolean(env[name]?.trim());
  const problems: [VariableName, string][] = [];
  const together = (a: VariableName, b: VariableName) => {
    if (isSet(a) !== isSet(b)) problems.push(isSet(a) ? [b, `must be set together with ${a}`] : [a, `must be set together with ${b}`]);
  };
  together('SYNCV3_TLS_CERT', 'SYNCV3_TLS_KEY');
  together('SYNCV3_OTLP_USERNAME', 'SYNCV3_OTLP_PASSWORD');
  if (isSet('SYNCV3_CLUSTER') && !/^(0|false|no)$/i.test(env.SYNCV3_CLUSTER?.trim() ?? '') && !isSet('SYNCV3_DB')) {
    problems.push(['SYNCV3_CLUSTER', 'needs SYNCV3_DB: the processes share one external PostgreSQL']);
  }
  if (isSet('SYNCV3_DB') && !isSet('SYNCV3_SECRET')) {
    problems.push(['SYNCV3_SECRET', 'is required when SYNCV3_DB is set (only the embedded database may generate one)']);
  }
  for (const name of ['SYNCV3_TLS_CERT', 'SYNCV3_TLS_KEY'] as const) {
    const file = env[name]?.trim();
    const problem = file ? unreadableFile(file) : undefined;
    if (problem) problems.push([name, `"${file}" ${problem}`]);
  }
  return problems;
}

/** Why a file the proxy must read at startup cannot be, or undefined when it can. */
function unreadableFile(file: string): string | undefined {
  try {
    if (!statSync(file).isFile()) return 'is not a file';
    accessSync(file, constants.R_OK);
    return undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'does not exist';
    if (code === 'EACCES') return 'cannot be read (permission denied)';
    return `cannot be read (${code ?? String(err)})`;
  }
}

/** Variables this proxy does not (or no longer) read, with what to do instead. */
const RETIRED: Record<string, string> = {
  SYNCV3_EMBEDDED_DB_PORT: 'the embedded PostgreSQL listens on a unix socket inside SYNCV3_DATA_DIR, on no TCP port',
  SYNCV3_JAEGER_URL: "the Go proxy's Jaeger exporter is not supported; send traces over OTLP with SYNCV3_OTLP_URL (Jaeger accepts OTLP)",
};

/** Variables of the repository's own scripts and tests (scripts/, test/), not of the proxy. */
const TOOLING = /^SYNCV3_(TEST_|E2E_|FUZZ_|BENCH_|NODE_CACHE$)/;

/** Edit distance, for "did you mean" on a misspelt variable. */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min((row[j] ?? 0) + 1, (next[j - 1] ?? 0) + 1, (row[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length] ?? 0;
}

/**
 * One warning per SYNCV3_* variable that the proxy does not read (a typo, or a Go proxy variable
 * that has no equivalent): ignored silently, a typo would leave the default in force unnoticed.
 */
function unknownVariableWarnings(env: Record<string, string | undefined>): string[] {
  const known = Object.keys(VARIABLES);
  return Object.keys(env)
    .filter((name) => name.startsWith('SYNCV3_') && !(name in VARIABLES) && !TOOLING.test(name))
    .sort()
    .map((name) => {
      const retired = RETIRED[name];
      if (retired) return `${name} is ignored: ${retired}`;
      const [closest] = known.map((k) => [k, distance(name, k)] as const).sort((a, b) => a[1] - b[1]);
      const hint = closest && closest[1] <= 3 ? `; did you mean ${closest[0]}?` : '';
      return `${name} is not a variable this proxy reads, so it is ignored${hint} (every variable is in .env.example)`;
    });
}

export interface Config {
  server: Upstream;
  /** undefined: run the embedded PostgreSQL under dataDir. */
  db: string | undefined;
  /** undefined only in embedded mode, where main.ts loads or generates one. */
  secret: string | undefined;
  bind: Address;
  tls: { cert: string; key: string } | undefined;
  pprof: Address | undefined;
  prom: Address | undefined;
  otlp:
    | {
        url: string;
        username: string | undefined;
        password: string | undefined;
      }
    | undefined;
  sentryDsn: string | undefined;
  logLevel: LogLevel;
  maxDbConnections: number;
  dbIdleTimeoutMs: number;
  httpTimeoutMs: number;
  httpInitialTimeoutMs: number;
  dataDir: string;
  /** In a container, run the embedded database only on a persistent SYNCV3_DATA_DIR (the image's default). */
  requirePersistentData: boolean;
  dbStartupTimeoutMs: number;
  shutdownGraceMs: number;
  maxConnectionsPerDevice: number;
  connectionTtlSecs: number;
  /** Unknown SYNCV3_* variables, for main.ts to log once the logger exists. */
  warnings: string[];
  /** Reverse proxies (`addr/prefix`) whose X-Forwarded-* headers describe the client; others' are replaced. */
  trustedProxies: string[];
  /** Set: one of several processes over one database; `processId` names this one in logs and metrics. */
  cluster: { processId: string } | undefined;
}

/** SYNCV3_CLUSTER: off, on under a generated name, or on under the name given. */
function clusterOf(raw: string | undefined): Config['cluster'] {
  if (raw === undefined || /^(0|false|no)$/i.test(raw)) return undefined;
  if (/^(1|true|yes)$/i.test(raw)) return { processId: `${hostname()}-${process.pid}` };
  return { processId: raw };
}

/** Thrown with every problem found, each naming its variable; main.ts prints it and exits 1. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(
      `Invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${problems.map((p) => `  - ${p}`).join('\n')}`,
    );
    this.name = 'ConfigError';
  }
}

const describe = (name: VariableName, what: string) => `${name} ${what}. ${name}: ${VARIABLES[name]}`;

function describeIssue(issue: z.core.$ZodIssue, env: Record<string, string | undefined>): string {
  const name = String(issue.path[0]) as VariableName;
  const missing = issue.code === 'invalid_type' && !env[name]?.trim();
  return describe(name, missing ? 'is required but not set' : issue.message);
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const result = schema.safeParse(Object.fromEntries(Object.keys(VARIABLES).map((k) => [k, env[k]])));
  const problems = [
    ...(result.error?.issues.map((issue) => describeIssue(issue, env)) ?? []),
    ...crossVariableProblems(env).map(([name, what]) => describe(name, what)),
  ];
  if (!result.success || problems.length) throw new ConfigError(problems);
  const e = result.data;
  const debug = isOn(e.SYNCV3_DEBUG);
  return {
    server: e.SYNCV3_SERVER,
    db: e.SYNCV3_DB,
    secret: e.SYNCV3_SECRET,
    bind: e.SYNCV3_BINDADDR,
    tls: e.SYNCV3_TLS_CERT && e.SYNCV3_TLS_KEY ? { cert: e.SYNCV3_TLS_CERT, key: e.SYNCV3_TLS_KEY } : undefined,
    pprof: e.SYNCV3_PPROF,
    prom: e.SYNCV3_PROM,
    otlp: e.SYNCV3_OTLP_URL
      ? {
          url: e.SYNCV3_OTLP_URL,
          username: e.SYNCV3_OTLP_USERNAME,
          password: e.SYNCV3_OTLP_PASSWORD,
        }
      : undefined,
    sentryDsn: e.SYNCV3_SENTRY_DSN,
    logLevel: debug ? 'trace' : LOG_LEVELS[e.SYNCV3_LOG_LEVEL],
    maxDbConnections: e.SYNCV3_MAX_DB_CONN === 0 ? 20 : e.SYNCV3_MAX_DB_CONN,
    dbIdleTimeoutMs: e.SYNCV3_DB_IDLE_TIMEOUT_SECS * 1000,
    httpTimeoutMs: e.SYNCV3_HTTP_TIMEOUT_SECS * 1000,
    httpInitialTimeoutMs: e.SYNCV3_HTTP_INITIAL_TIMEOUT_SECS * 1000,
    dataDir: e.SYNCV3_DATA_DIR,
    requirePersistentData: isOn(e.SYNCV3_REQUIRE_PERSISTENT_DATA),
    dbStartupTimeoutMs: e.SYNCV3_DB_STARTUP_TIMEOUT_SECS * 1000,
    shutdownGraceMs: e.SYNCV3_SHUTDOWN_GRACE_SECS * 1000,
    maxConnectionsPerDevice: e.SYNCV3_MAX_CONNECTIONS_PER_DEVICE,
    connectionTtlSecs: e.SYNCV3_CONNECTION_TTL_SECS,
    warnings: unknownVariableWarnings(env),
    trustedProxies: e.SYNCV3_TRUSTED_PROXIES,
    cluster: clusterOf(e.SYNCV3_CLUSTER),
  };
}
