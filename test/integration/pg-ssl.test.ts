// SYNCV3_DB's sslmode against real servers: one that accepts TLS connections only (self-signed
// certificate, as Debian's default), and the test server, which has no TLS.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { databaseUrl as configDatabaseUrl } from '../../src/config.js';
import { openPool, type Pool } from '../../src/store/db.js';
import { serverUrl, testLogger } from '../support/db.js';
import { startTlsPostgres, type TlsPostgres } from '../support/tls-postgres.js';

async function encrypted(url: string): Promise<boolean> {
  const pool: Pool = await openPool({ connectionString: url, max: 1, idleTimeoutMs: 1000 }, testLogger);
  try {
    const { rows } = await pool.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    return rows[0]?.ssl === true;
  } finally {
    await pool.end();
  }
}

const withParams = (url: string, params: Record<string, string>) => {
  const u = new URL(url);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u.href;
};

describe('sslmode against a server that accepts TLS only, with a self-signed certificate', () => {
  let server: TlsPostgres;
  before(async () => {
    server = await startTlsPostgres();
  });
  after(() => server?.stop());
  const url = (params: Record<string, string>) => withParams(server.url, params);

  it('require, prefer and allow encrypt without verifying the certificate', async () => {
    for (const sslmode of ['require', 'prefer', 'allow']) assert.equal(await encrypted(url({ sslmode })), true, sslmode);
    assert.equal(await encrypted(server.url), true, 'no sslmode: prefer');
  });

  it('disable does not encrypt, so this server refuses it', async () => {
    await assert.rejects(encrypted(url({ sslmode: 'disable' })), /no pg_hba\.conf entry/);
  });

  it('verify-ca and verify-full accept the certificate signed by sslrootcert', async () => {
    assert.equal(await encrypted(url({ sslmode: 'verify-ca', sslrootcert: server.serverCa })), true);
    assert.equal(await encrypted(url({ sslmode: 'verify-full', sslrootcert: server.serverCa })), true);
  });

  it('verify-ca, verify-full and require with sslrootcert refuse a certificate another CA did not sign', async () => {
    for (const sslmode of ['verify-ca', 'verify-full', 'require']) {
      await assert.rejects(encrypted(url({ sslmode, sslrootcert: server.otherCa })), /self-signed|unable to verify|certificate/i, sslmode);
    }
  });

  it('verify-full checks the name: the certificate is for 127.0.0.1, not localhost', async () => {
    const byName = new URL(server.url);
    byName.hostname = 'localhost';
    const localhostUrl = withParams(byName.href, { sslmode: 'verify-full', sslrootcert: server.serverCa });
    await assert.rejects(encrypted(localhostUrl), /altnames|localhost/i);
    const caOnly = withParams(byName.href, { sslmode: 'verify-ca', sslrootcert: server.serverCa });
    assert.equal(await encrypted(caOnly), true, 'verify-ca does not check the name');
  });

  it('takes a Go-proxy libpq string as is', async () => {
    const converted = configDatabaseUrl(
      `host=127.0.0.1 port=${server.port} user=postgres password=tls-test dbname=postgres sslmode=require`,
    );
    assert.ok('url' in converted);
    assert.equal(await encrypted(converted.url), true);
  });
});

describe('sslmode against a server without TLS', () => {
  let hasTls = false;
  before(async () => {
    const pool = await openPool(
      { connectionString: withParams(serverUrl(), { sslmode: 'disable' }), max: 1, idleTimeoutMs: 1000 },
      testLogger,
    );
    hasTls = (await pool.query<{ ssl: string }>('SHOW ssl')).rows[0]?.ssl === 'on';
    await pool.end();
  });

  it('prefer (and no sslmode) and allow connect in plain text; require fails', async (t) => {
    if (hasTls) return t.skip('the test server has TLS on');
    for (const sslmode of ['prefer', 'allow', 'disable'])
      assert.equal(await encrypted(withParams(serverUrl(), { sslmode })), false, sslmode);
    assert.equal(await encrypted(serverUrl()), false, 'no sslmode');
    const requireUrl = withParams(serverUrl(), { sslmode: 'require' });
    // The embedded test server is reached over its unix socket, where libpq never encrypts.
    if (new URL(serverUrl()).searchParams.get('host')?.startsWith('/')) assert.equal(await encrypted(requireUrl), false, 'unix socket');
    else await assert.rejects(encrypted(requireUrl), /does not support SSL/);
  });
});
