import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig, VARIABLES } from '../../src/config.js';

const minimal = { SYNCV3_SERVER: 'https://matrix.example.org' };

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
      SYNCV3_TLS_CERT: '/c.pem',
      SYNCV3_TLS_KEY: '/k.pem',
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
      SYNCV3_EMBEDDED_DB_PORT: '6543',
      SYNCV3_SHUTDOWN_GRACE_SECS: '3',
      SYNCV3_MAX_CONNECTIONS_PER_DEVICE: '4',
      SYNCV3_CONNECTION_TTL_SECS: '3600',
    });
    assert.deepEqual(c.server, { kind: 'unix', path: '/run/synapse.sock' });
    assert.deepEqual(c.bind, { kind: 'tcp', host: '::1', port: 9000 });
    assert.deepEqual(c.pprof, { kind: 'tcp', host: '0.0.0.0', port: 6060 });
    assert.deepEqual(c.prom, { kind: 'tcp', host: '127.0.0.1', port: 2112 });
    assert.deepEqual(c.tls, { cert: '/c.pem', key: '/k.pem' });
    assert.deepEqual(c.otlp, { url: 'http://otel:4318', username: 'u', password: 'p' });
    assert.equal(c.logLevel, 'error');
    assert.equal(c.maxDbConnections, 7);
    assert.equal(c.httpInitialTimeoutMs, 90_000);
    assert.equal(c.embeddedDbPort, 6543);
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
      SYNCV3_TLS_CERT: '/c.pem',
      SYNCV3_OTLP_URL: 'mailto:x',
      SYNCV3_OTLP_PASSWORD: 'p',
      SYNCV3_SENTRY_DSN: 'nonsense',
      SYNCV3_LOG_LEVEL: 'loud',
      SYNCV3_DEBUG: 'maybe',
      SYNCV3_MAX_DB_CONN: '-1',
      SYNCV3_DB_IDLE_TIMEOUT_SECS: '0',
      SYNCV3_HTTP_TIMEOUT_SECS: '1.5',
      SYNCV3_HTTP_INITIAL_TIMEOUT_SECS: 'ten',
      SYNCV3_EMBEDDED_DB_PORT: '70000',
      SYNCV3_SHUTDOWN_GRACE_SECS: 'x',
      SYNCV3_MAX_CONNECTIONS_PER_DEVICE: '2',
    });
    const named = found.map((p) => p.split(' ')[0]).sort();
    assert.deepEqual(named, [
      'SYNCV3_BINDADDR',
      'SYNCV3_DB_IDLE_TIMEOUT_SECS',
      'SYNCV3_DEBUG',
      'SYNCV3_EMBEDDED_DB_PORT',
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

  it('.env.example documents every variable, and nothing else', () => {
    const example = readFileSync(new URL('../../.env.example', import.meta.url), 'utf8');
    const documented = [...example.matchAll(/^#?\s*(SYNCV3_[A-Z_]+)=/gm)].map((m) => m[1]).sort();
    assert.deepEqual(documented, Object.keys(VARIABLES).sort());
  });
});
