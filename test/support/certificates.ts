// Throwaway TLS material for tests that serve HTTPS.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

export /** A self-signed certificate for 127.0.0.1, or undefined without openssl. */
async function selfSignedCertificate(dir: string): Promise<{ cert: string; key: string } | undefined> {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  try {
    await promisify(execFile)('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      key,
      '-out',
      cert,
    ]);
  } catch {
    return undefined;
  }
  return { cert, key };
}
