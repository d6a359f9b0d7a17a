// The token-encryption secret for the embedded mode: generated once, kept beside the database
// it protects. Losing it makes every stored access token unreadable, so it is never rotated here.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from './telemetry/logger.js';

const SECRET_FILE = 'secret';

export async function loadOrCreateSecret(dataDir: string, logger: Logger): Promise<string> {
  const file = path.resolve(dataDir, SECRET_FILE);
  try {
    const secret = (await readFile(file, 'utf8')).trim();
    if (secret) return secret;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
  const secret = randomBytes(32).toString('base64url');
  // 'wx': if two processes race, the loser fails instead of overwriting the winner's secret.
  await writeFile(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
  logger.warn({ file }, 'SYNCV3_SECRET is unset: generated a new secret and stored it (mode 0600); back this file up with the database');
  return secret;
}
