// libpq's `sslmode` (and `sslrootcert`, `sslcert`, `sslkey`) as PostgreSQL's own tools and the
// Go proxy's driver read them, for node-postgres, which reads the same keywords its own way
// (`require` verifies the certificate, `prefer` never falls back to plain text).
//
//   disable      plain text only
//   allow        plain text; encrypted if the server refuses plain text
//   prefer       encrypted, not verified; plain text if the server has no TLS (the default)
//   require      encrypted, not verified (verified against sslrootcert when one is given)
//   verify-ca    encrypted, the chain verified against sslrootcert (`system`: the OS's CAs)
//   verify-full  verify-ca, and the server's name must match the host connected to
//
// Over a unix socket libpq never encrypts, whatever the mode.
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ConnectionOptions } from 'node:tls';

export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

/** The keywords handled here; removed from the URL so node-postgres does not apply its own reading. */
const SSL_KEYWORDS = ['sslmode', 'sslrootcert', 'sslcert', 'sslkey', 'ssl', 'uselibpqcompat'];

/** A connection attempt's TLS: false for plain text. */
export type SslAttempt = false | ConnectionOptions;

export interface SslPlan {
  /** The connection URL without its TLS keywords. */
  connectionString: string;
  mode: SslMode;
  /** In order: the first that the server accepts is used (two only for allow and prefer). */
  attempts: SslAttempt[];
}

/** A TLS setting that cannot work; the message names the keyword, never the password. */
export class SslConfigError extends Error {
  override name = 'SslConfigError';
}

const STAND_IN_HOST = 'no-host.invalid';

type ReadFile = (file: string) => Buffer;

function readKeyword(keyword: string, file: string, read: ReadFile): Buffer {
  try {
    return read(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new SslConfigError(`${keyword} "${file}" cannot be read (${code})`);
  }
}

/** libpq's default files under ~/.postgresql, used when present and not named. */
const defaultFile = (name: string) => path.join(os.homedir(), '.postgresql', name);

export function sslPlan(url: string, read: ReadFile = readFileSync, exists: (file: string) => boolean = existsSync): SslPlan {
  // `postgres://user@/db?host=/run/postgresql` (a unix socket) is valid for libpq and node-postgres
  // but not for WHATWG URL, which wants a host after `@`: parse with a stand-in one.
  const hostless = !URL.canParse(url);
  const parsed = new URL(hostless ? url.replace('@/', `@${STAND_IN_HOST}/`) : url);
  const params = parsed.searchParams;
  const value = (key: string) => params.get(key) || undefined;
  const modeRaw = value('sslmode') ?? 'prefer';
  if (!(SSL_MODES as readonly string[]).includes(modeRaw)) {
    throw new SslConfigError(`sslmode "${modeRaw}" is not one of ${SSL_MODES.join(', ')}`);
  }
  const mode = modeRaw as SslMode;
  let rootcert = value('sslrootcert');
  if (rootcert === undefined && exists(defaultFile('root.crt'))) rootcert = defaultFile('root.crt');
  const cert = value('sslcert') ?? (exists(defaultFile('postgresql.crt')) ? defaultFile('postgresql.crt') : undefined);
  const key = value('sslkey') ?? (exists(defaultFile('postgresql.key')) ? defaultFile('postgresql.key') : undefined);
  for (const keyword of SSL_KEYWORDS) params.delete(keyword);
  const connectionString = hostless ? parsed.href.replace(`@${STAND_IN_HOST}/`, '@/') : parsed.href;

  const host = params.get('host') ?? (hostless ? '' : decodeURIComponent(parsed.hostname));
  if (mode === 'disable' || host.startsWith('/')) return { connectionString, mode, attempts: [false] };

  const client: ConnectionOptions = {};
  if (cert) client.cert = readKeyword('sslcert', cert, read);
  if (key) client.key = readKeyword('sslkey', key, read);
  const unverified: ConnectionOptions = { ...client, rejectUnauthorized: false };
  if (mode === 'allow') return { connectionString, mode, attempts: [false, unverified] };
  if (mode === 'prefer') return { connectionString, mode, attempts: [unverified, false] };
  if (mode === 'require' && rootcert === undefined) return { connectionString, mode, attempts: [unverified] };

  if (rootcert === undefined) {
    throw new SslConfigError(
      `sslmode ${mode} needs the CA to verify against: set sslrootcert to a PEM file, or to "system" for the system's CAs`,
    );
  }
  const ca = rootcert === 'system' ? {} : { ca: readKeyword('sslrootcert', rootcert, read) };
  // verify-ca checks the chain only; verify-full also the name (Node's default check, SNI-less for IPs).
  const verified: ConnectionOptions =
    mode === 'verify-full'
      ? { ...client, ...ca, rejectUnauthorized: true }
      : { ...client, ...ca, rejectUnauthorized: true, checkServerIdentity: () => undefined };
  return { connectionString, mode, attempts: [verified] };
}

/**
 * Whether a failed first attempt is one that the next attempt may fix, as libpq retries:
 * prefer when the server has no TLS, allow when the server refuses the plain-text connection.
 * A network error is not: the other attempt would meet it too.
 */
export function triesNext(mode: SslMode, err: unknown): boolean {
  const message = err instanceof Error ? err.message : String(err);
  if (mode === 'prefer') return /does not support SSL/i.test(message);
  if (mode === 'allow') return typeof (err as { code?: unknown }).code === 'string' && /^28/.test((err as { code: string }).code);
  return false;
}
