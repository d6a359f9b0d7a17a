// libpq's sslmode semantics, as the Go proxy's connection strings mean them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SslConfigError, sslPlan, triesNext } from '../../../src/store/pg-ssl.js';

const files: Record<string, string> = { '/ca.pem': 'CA', '/client.crt': 'CERT', '/client.key': 'KEY' };
const read = (file: string) => {
  const text = files[file];
  if (text === undefined) throw Object.assign(new Error('missing'), { code: 'ENOENT' });
  return Buffer.from(text);
};
const none = () => false;
const plan = (url: string) => sslPlan(url, read, none);
const BASE = 'postgres://u:p@db.example:5432/syncv3';

describe('sslPlan', () => {
  it('strips the TLS keywords from the URL and keeps the others', () => {
    const p = plan(`${BASE}?sslmode=require&sslrootcert=/ca.pem&application_name=x`);
    assert.equal(p.connectionString, `${BASE}?application_name=x`);
  });

  it('disable: plain text only', () => {
    assert.deepEqual(plan(`${BASE}?sslmode=disable`).attempts, [false]);
  });

  it('prefer (also the default): encrypted without verification, then plain text', () => {
    for (const url of [`${BASE}?sslmode=prefer`, BASE]) {
      const p = plan(url);
      assert.equal(p.mode, 'prefer');
      assert.deepEqual(p.attempts, [{ rejectUnauthorized: false }, false]);
    }
  });

  it('allow: plain text, then encrypted without verification', () => {
    assert.deepEqual(plan(`${BASE}?sslmode=allow`).attempts, [false, { rejectUnauthorized: false }]);
  });

  it('require: encrypted, not verified; verified like verify-ca when a root certificate is given', () => {
    assert.deepEqual(plan(`${BASE}?sslmode=require`).attempts, [{ rejectUnauthorized: false }]);
    const [withRoot] = plan(`${BASE}?sslmode=require&sslrootcert=/ca.pem`).attempts;
    assert.ok(withRoot);
    assert.equal(withRoot.rejectUnauthorized, true);
    assert.equal(String(withRoot.ca), 'CA');
    assert.equal(withRoot.checkServerIdentity?.('other.example', {} as never), undefined, 'the name is not checked');
  });

  it('verify-ca checks the chain only; verify-full the name too', () => {
    const [ca] = plan(`${BASE}?sslmode=verify-ca&sslrootcert=/ca.pem`).attempts;
    assert.ok(ca);
    assert.equal(ca.rejectUnauthorized, true);
    assert.equal(typeof ca.checkServerIdentity, 'function');
    const [full] = plan(`${BASE}?sslmode=verify-full&sslrootcert=/ca.pem`).attempts;
    assert.ok(full);
    assert.equal(full.rejectUnauthorized, true);
    assert.equal(full.checkServerIdentity, undefined, "Node's own name check");
    assert.equal(String(full.ca), 'CA');
  });

  it('sslrootcert=system verifies against the system CAs', () => {
    const [full] = plan(`${BASE}?sslmode=verify-full&sslrootcert=system`).attempts;
    assert.ok(full);
    assert.equal(full.ca, undefined);
    assert.equal(full.rejectUnauthorized, true);
  });

  it('sends a client certificate when sslcert and sslkey are given', () => {
    const [attempt] = plan(`${BASE}?sslmode=require&sslcert=/client.crt&sslkey=/client.key`).attempts;
    assert.ok(attempt);
    assert.equal(String(attempt.cert), 'CERT');
    assert.equal(String(attempt.key), 'KEY');
  });

  it('uses ~/.postgresql/root.crt when present, as libpq does', () => {
    const home = (file: string) => file.endsWith('/.postgresql/root.crt');
    const p = sslPlan(`${BASE}?sslmode=verify-ca`, () => Buffer.from('HOME CA'), home);
    assert.equal(String(p.attempts[0] ? p.attempts[0].ca : undefined), 'HOME CA');
  });

  it('never encrypts over a unix socket', () => {
    const p = plan('postgres://u:p@/syncv3?host=%2Frun%2Fpostgresql&sslmode=require');
    assert.deepEqual(p.attempts, [false]);
    assert.equal(p.connectionString, 'postgres://u:p@/syncv3?host=%2Frun%2Fpostgresql');
  });

  it('refuses what cannot work, naming the keyword', () => {
    assert.throws(
      () => plan(`${BASE}?sslmode=verify-full`),
      (err: Error) => err instanceof SslConfigError && /sslrootcert/.test(err.message),
    );
    assert.throws(() => plan(`${BASE}?sslmode=sometimes`), /sslmode "sometimes" is not one of disable, allow/);
    assert.throws(() => plan(`${BASE}?sslmode=verify-ca&sslrootcert=/nope.pem`), /sslrootcert "\/nope\.pem" cannot be read \(ENOENT\)/);
  });
});

describe('triesNext', () => {
  it('prefer falls back only when the server has no TLS; allow only when the server refuses plain text', () => {
    assert.equal(triesNext('prefer', new Error('The server does not support SSL connections')), true);
    assert.equal(triesNext('prefer', Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })), false);
    assert.equal(triesNext('allow', Object.assign(new Error('no pg_hba.conf entry … no encryption'), { code: '28000' })), true);
    assert.equal(triesNext('allow', Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })), false);
    assert.equal(triesNext('require', new Error('The server does not support SSL connections')), false);
  });
});
