import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, VARIABLES, type VariableName } from '../../src/config.js';

const minimal = { SYNCV3_SERVER: 'https://matrix.example.org' };
const external = { ...minimal, SYNCV3_SECRET: 's' };
/** Any file that exists and can be read. */
const READABLE = fileURLToPath(import.meta.url);

const tmp = mkdtempSync(path.join(os.tmpdir(), 'syncv3-config-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const CERT = path.join(tmp, 'cert.pem');
const KEY = path.join(tmp, 'key.pem');
writeFileSync(CERT, '-----BEGIN CERTIFICATE-----\n');
writeFileSync(KEY, '-----BEGIN PRIVATE KEY-----\n');

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    return err.problems;
  }
  assert.fail('expected the configuration to be rejected');
}

describe('config', () => {
  it('applies the Go proxy defaults with only SYNCV3_SERVER set (embedded database)', () => {
    const c = loadConfig(minimal);
    assert.deepEqual(c.server, { kind: 'url', baseUrl: 'https://matrix.example.org' });
    assert.deepEqual(c.bind, { kind: 'tcp', host: '0.0.0.0', port: 8008 });
    assert.equal(c.db, undefined);
    assert.equal(c.secret, undefined);
    assert.equal(c.logLevel, 'info');
    assert.equal(c.dbIdleTimeoutMs, 3_600_000);
    assert.equal(c.httpTimeoutMs, 300_000);
    assert.equal(c.httpInitialTimeoutMs, 1_800_000);
    assert.equal(c.maxDbConnections, 20);
    assert.equal(c.dataDir, './data');
    assert.equal(c.tls, undefined);
    assert.equal(c.prom, undefined);
  });

  it('parses every variable when set', () => {
    const c = loadConfig({
      SYNCV3_SERVER: '/run/synapse.sock',
      SYNCV3_DB: 'user=p dbname=syncv3 sslmode=disable',
      SYNCV3_SECRET: 's3cret',
      SYNCV3_BINDADDR: '[::1]:9000',
      SYNCV3_TLS_CERT: CERT,
      SYNCV3_TLS_KEY: KEY,
      SYNCV3_PPROF: ':6060',
      SYNCV3_PROM: '127.0.0.1:2112',
      SYNCV3_OTLP_URL: 'http://otel:4318',
      SYNCV3_OTLP_USERNAME: 'u',
      SYNCV3_OTLP_PASSWORD: 'p',
      SYNCV3_SENTRY_DSN: 'https://key@sentry.example.org/1',
      SYNCV3_LOG_LEVEL: 'ERR',
      SYNCV3_MAX_DB_CONN: '7',
      SYNCV3_DB_IDLE_TIMEOUT_SECS: '60',
      SYNCV3_HTTP_TIMEOUT_SECS: '30',
      SYNCV3_HTTP_INITIAL_TIMEOUT_SECS: '90',
      SYNCV3_DATA_DIR: '/var/lib/syncv3',
      SYNCV3_DB_STARTUP_TIMEOUT_SECS: '5',
      SYNCV3_SHUTDOWN_GRACE_SECS: '3',
      SYNCV3_MAX_CONNECTIONS_PER_DEVICE: '4',
      SYNCV3_CONNECTION_TTL_SECS: '3600',
    });
    assert.deepEqual(c.server, { kind: 'unix', path: '/run/synapse.sock' });
    assert.deepEqual(c.bind, { kind: 'tcp', host: '::1', port: 9000 });
    assert.deepEqual(c.pprof, { kind: 'tcp', host: '::', port: 6060 }, ':port is dual-stack, as in Go');
    assert.deepEqual(c.prom, { kind: 'tcp', host: '127.0.0.1', port: 2112 });
    assert.deepEqual(c.tls, { cert: CERT, key: KEY });
    assert.equal(c.db, 'postgres://p@/syncv3?sslmode=disable', 'the libpq string as the URL node-postgres reads');
    assert.deepEqual(c.otlp, { url: 'http://otel:4318', username: 'u', password: 'p' });
    assert.equal(c.logLevel, 'error');
    assert.equal(c.maxDbConnections, 7);
    assert.equal(c.httpInitialTimeoutMs, 90_000);
    assert.equal(c.dbStartupTimeoutMs, 5000);
    assert.equal(c.shutdownGraceMs, 3000);
    assert.equal(c.maxConnectionsPerDevice, 4);
    assert.equal(c.connectionTtlSecs, 3600);
  });

  it('accepts a unix socket to listen on and strips a trailing slash from the server URL', () => {
    const c = loadConfig({ SYNCV3_SERVER: 'http://synapse:8008/', SYNCV3_BINDADDR: '/run/syncv3.sock' });
    assert.deepEqual(c.server, { kind: 'url', baseUrl: 'http://synapse:8008' });
    assert.deepEqual(c.bind, { kind: 'unix', path: '/run/syncv3.sock' });
  });

  it('SYNCV3_DEBUG forces trace logging', () => {
    assert.equal(loadConfig({ ...minimal, SYNCV3_DEBUG: '1' }).logLevel, 'trace');
  });

  it('reports a missing SYNCV3_SERVER with its description', () => {
    const [p, ...rest] = problems({});
    assert.deepEqual(rest, []);
    assert.match(p ?? '', /^SYNCV3_SERVER is required but not set\. SYNCV3_SERVER: the homeserver/);
  });

  it('treats blank values as unset', () => {
    assert.match(problems({ SYNCV3_SERVER: '   ' })[0] ?? '', /SYNCV3_SERVER is required/);
  });

  it('lists every problem at once, each naming its variable', () => {
    const found = problems({
      SYNCV3_SERVER: 'ftp://nope',
      SYNCV3_DB: 'postgres://x',
      SYNCV3_BINDADDR: 'not-an-address',
      SYNCV3_PROM: 'localhost:99999',
      SYNCV3_TLS_CERT: READABLE,
      SYNCV3_OTLP_URL: 'mailto:x',
      SYNCV3_OTLP_PASSWORD: 'p',
      SYNCV3_SENTRY_DSN: 'nonsense',
      SYNCV3_LOG_LEVEL: 'loud',
      SYNCV3_DEBUG: 'maybe',
      SYNCV3_MAX_DB_CONN: '-1',
      SYNCV3_DB_IDLE_TIMEOUT_SECS: '0',
      SYNCV3_HTTP_TIMEOUT_SECS: '1.5',
      SYNCV3_HTTP_INITIAL_TIMEOUT_SECS: 'ten',
      SYNCV3_DB_STARTUP_TIMEOUT_SECS: '-5',
      SYNCV3_SHUTDOWN_GRACE_SECS: 'x',
      SYNCV3_MAX_CONNECTIONS_PER_DEVICE: '2',
    });
    const named = found.map((p) => p.split(' ')[0]).sort();
    assert.deepEqual(named, [
      'SYNCV3_BINDADDR',
      'SYNCV3_DB_IDLE_TIMEOUT_SECS',
      'SYNCV3_DB_STARTUP_TIMEOUT_SECS',
      'SYNCV3_DEBUG',
      'SYNCV3_HTTP_INITIAL_TIMEOUT_SECS',
      'SYNCV3_HTTP_TIMEOUT_SECS',
      'SYNCV3_LOG_LEVEL',
      'SYNCV3_MAX_CONNECTIONS_PER_DEVICE',
      'SYNCV3_MAX_DB_CONN',
      'SYNCV3_OTLP_URL',
      'SYNCV3_OTLP_USERNAME',
      'SYNCV3_PROM',
      'SYNCV3_SECRET',
      'SYNCV3_SENTRY_DSN',
      'SYNCV3_SERVER',
      'SYNCV3_SHUTDOWN_GRACE_SECS',
      'SYNCV3_TLS_KEY',
    ]);
    for (const p of found) {
      const name = p.split(' ')[0] as keyof typeof VARIABLES;
      assert.ok(p.endsWith(`${name}: ${VARIABLES[name]}`), `"${p}" should end with the variable's description`);
    }
    const message = new ConfigError(found).message;
    assert.match(message, /^Invalid configuration \(17 problems\):/);
  });

  it('requires SYNCV3_SECRET with an external database but not with the embedded one', () => {
    assert.match(problems({ ...minimal, SYNCV3_DB: 'postgres://db/syncv3' })[0] ?? '', /^SYNCV3_SECRET is required when SYNCV3_DB is set/);
    assert.equal(loadConfig({ ...minimal, SYNCV3_DB: 'postgres://db/syncv3', SYNCV3_SECRET: 'x' }).secret, 'x');
  });

  it('takes SYNCV3_DB as a postgres:// URL unchanged', () => {
    for (const url of [
      'postgres://syncv3:pw@db:5432/syncv3?sslmode=require',
      'postgresql://db/syncv3',
      'postgres:///syncv3?host=/run/pg',
    ]) {
      assert.equal(loadConfig({ ...external, SYNCV3_DB: url }).db, url);
    }
  });

  it('turns a libpq key=value SYNCV3_DB into the equivalent URL', () => {
    const cases: [string, string][] = [
      ['host=db port=5433 user=syncv3 dbname=syncv3', 'postgres://syncv3@db:5433/syncv3'],
      ["  user = 'sync v3'   password='it\\'s @/:secret' host=db  dbname=s  ", "postgres://sync%20v3:it's%20%40%2F%3Asecret@db/s"],
      ['host=/run/postgresql port=5433 dbname=syncv3', 'postgres:///syncv3?host=%2Frun%2Fpostgresql&port=5433'],
      ['hostaddr=::1 dbname=d sslmode=disable application_name=syncv3', 'postgres://[::1]/d?sslmode=disable&application_name=syncv3'],
      ['password=a\\ b user=u', 'postgres://u:a%20b@/'],
    ];
    for (const [libpq, url] of cases) assert.equal(loadConfig({ ...external, SYNCV3_DB: libpq }).db, url, libpq);
  });

  it('rejects a SYNCV3_DB that is neither, naming the variable and never echoing the value', () => {
    for (const db of [
      'x',
      'hunter2',
      'mysql://u:hunter2@db/x',
      'password=hunter2 garbage',
      "password='hunter2",
      'password=hunter2\\',
      'postgres://[hunter2',
    ]) {
      const found = problems({ ...external, SYNCV3_DB: db });
      assert.equal(found.length, 1, db);
      assert.match(
        found[0] ?? '',
        /^SYNCV3_DB is (neither a postgres:\/\/ \(or postgresql:\/\/\) URL nor a libpq key=value string|not a valid postgres:\/\/ URL)/,
      );
      assert.ok(found[0]?.endsWith(`SYNCV3_DB: ${VARIABLES.SYNCV3_DB}`), 'with its meaning');
      assert.ok(!found[0]?.includes('hunter2'), `"${db}" must not be echoed`);
    }
  });

  it('reports TLS files that are missing or unreadable, with every other problem', () => {
    const dir = path.join(tmp, 'a-directory');
    mkdirSync(dir, { recursive: true });
    const found = problems({ ...minimal, SYNCV3_TLS_CERT: path.join(tmp, 'nope.pem'), SYNCV3_TLS_KEY: dir, SYNCV3_BINDADDR: 'nowhere' });
    assert.deepEqual(
      found.map((p) => p.split('. ')[0]),
      [
        'SYNCV3_BINDADDR "nowhere" is neither host:port nor an absolute unix socket path',
        `SYNCV3_TLS_CERT "${path.join(tmp, 'nope.pem')}" does not exist`,
        `SYNCV3_TLS_KEY "${dir}" is not a file`,
      ],
    );
    assert.match(new ConfigError(found).message, /^Invalid configuration \(3 problems\):/);
    if (process.getuid?.() !== 0) {
      // root reads any file, so this check only means something for other users.
      const locked = path.join(tmp, 'locked.pem');
      writeFileSync(locked, 'x', { mode: 0o000 });
      assert.match(problems({ ...minimal, SYNCV3_TLS_CERT: locked, SYNCV3_TLS_KEY: KEY })[0] ?? '', /cannot be read \(permission denied\)/);
    }
  });

  it('reports each remaining kind of bad value with its variable and meaning', () => {
    const cases: [Record<string, string>, VariableName, RegExp][] = [
      [{ SYNCV3_SERVER: 'matrix.example.org' }, 'SYNCV3_SERVER', /neither an http\(s\) URL nor an absolute unix socket path/],
      [{ SYNCV3_PPROF: 'nowhere' }, 'SYNCV3_PPROF', /"nowhere" is neither host:port/],
      [{ SYNCV3_PPROF: '127.0.0.1:65536' }, 'SYNCV3_PPROF', /"127\.0\.0\.1:65536" is neither host:port/],
      [{ SYNCV3_CONNECTION_TTL_SECS: '59' }, 'SYNCV3_CONNECTION_TTL_SECS', /"59" is not a whole number from 60/],
      [{ SYNCV3_CONNECTION_TTL_SECS: '1h' }, 'SYNCV3_CONNECTION_TTL_SECS', /"1h" is not a whole number/],
      [{ SYNCV3_TLS_KEY: KEY }, 'SYNCV3_TLS_CERT', /must be set together with SYNCV3_TLS_KEY/],
      [{ SYNCV3_TLS_CERT: CERT }, 'SYNCV3_TLS_KEY', /must be set together with SYNCV3_TLS_CERT/],
      [{ SYNCV3_OTLP_USERNAME: 'u' }, 'SYNCV3_OTLP_PASSWORD', /must be set together with SYNCV3_OTLP_USERNAME/],
      [{ SYNCV3_SENTRY_DSN: 'ftp://key@sentry/1' }, 'SYNCV3_SENTRY_DSN', /must be an http\(s\) URL/],
      [{ SYNCV3_MAX_DB_CONN: '10001' }, 'SYNCV3_MAX_DB_CONN', /from 0 to 10000/],
      [{ SYNCV3_MAX_CONNECTIONS_PER_DEVICE: '1001' }, 'SYNCV3_MAX_CONNECTIONS_PER_DEVICE', /from 3 to 1000/],
      [{ SYNCV3_SHUTDOWN_GRACE_SECS: '3601' }, 'SYNCV3_SHUTDOWN_GRACE_SECS', /from 0 to 3600/],
      [{ SYNCV3_DB_STARTUP_TIMEOUT_SECS: '3601' }, 'SYNCV3_DB_STARTUP_TIMEOUT_SECS', /from 0 to 3600/],
    ];
    for (const [env, name, why] of cases) {
      const found = problems({ ...minimal, ...env });
      assert.equal(found.length, 1, `${JSON.stringify(env)}: ${found.join(' | ')}`);
      assert.ok(found[0]?.startsWith(`${name} `), found[0]);
      assert.match(found[0] ?? '', why);
      assert.ok(found[0]?.endsWith(`${name}: ${VARIABLES[name]}`), found[0]);
    }
  });

  it('.env.example documents every variable, and nothing else', () => {
    const example = readFileSync(new URL('../../.env.example', import.meta.url), 'utf8');
    const documented = [...example.matchAll(/^#?\s*(SYNCV3_[A-Z_]+)=/gm)].map((m) => m[1]).sort();
    assert.deepEqual(documented, Object.keys(VARIABLES).sort());
  });
});

describe('SYNCV3_CLUSTER', () => {
  const withDb = { ...external, SYNCV3_DB: 'postgres://x/y' };
  it('is off unless set, 0 included', () => {
    assert.equal(loadConfig(withDb).cluster, undefined);
    assert.equal(loadConfig({ ...withDb, SYNCV3_CLUSTER: '0' }).cluster, undefined);
  });
  it('names the process after the host and pid for 1, or takes the name given', () => {
    assert.equal(loadConfig({ ...withDb, SYNCV3_CLUSTER: '1' }).cluster?.processId, `${os.hostname()}-${process.pid}`);
    assert.equal(loadConfig({ ...withDb, SYNCV3_CLUSTER: 'syncv3-a' }).cluster?.processId, 'syncv3-a');
  });
  it('refuses a name with other characters, and the embedded database', () => {
    assert.match(problems({ ...withDb, SYNCV3_CLUSTER: 'a b' }).join('\n'), /SYNCV3_CLUSTER must be 0, 1, or a process name/);
    assert.match(problems({ ...external, SYNCV3_CLUSTER: '1' }).join('\n'), /SYNCV3_CLUSTER needs SYNCV3_DB/);
  });
});

describe('unknown SYNCV3_ variables', () => {
  it('warns about each, suggesting the variable meant and what replaces a Go-proxy-only one', () => {
    const { warnings } = loadConfig({
      ...minimal,
      SYNCV3_LOGLEVEL: 'debug',
      SYNCV3_JAEGER_URL: 'http://jaeger:14268',
      SYNCV3_SOMETHING_ELSE: '1',
      OTHER: 'x',
    });
    assert.equal(warnings.length, 3, warnings.join('\n'));
    assert.match(warnings[0] ?? '', /^SYNCV3_JAEGER_URL is ignored: .*SYNCV3_OTLP_URL/);
    assert.match(
      warnings[1] ?? '',
      /^SYNCV3_LOGLEVEL is not a variable this proxy reads, so it is ignored; did you mean SYNCV3_LOG_LEVEL\?/,
    );
    assert.match(warnings[2] ?? '', /^SYNCV3_SOMETHING_ELSE is not a variable this proxy reads, so it is ignored \(every variable/);
  });

  it("says nothing about known variables or the repository's own test and tooling ones", () => {
    const { warnings } = loadConfig({
      ...external,
      SYNCV3_DB: 'postgres://x/y',
      SYNCV3_TEST_DB: 'x',
      SYNCV3_E2E_REQUIRED: '1',
      SYNCV3_NODE_CACHE: '/c',
    });
    assert.deepEqual(warnings, []);
  });
});
