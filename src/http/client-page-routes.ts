// The /client/ page: static files from web/ (no build step), and the one endpoint of its own,
// GET /client/status, which tells an authenticated device about itself only: how far its
// first v2 sync has got. Everything else the page does goes through the client API that any
// client uses (sliding sync, and login forwarded to the homeserver).
//
// The files are listed once at start-up and served from that list, so no request path ever
// reaches the file system. The page gets a strict Content-Security-Policy: its own scripts and
// styles only, requests to its own origin only, and images from blob: (avatars are fetched with
// the token and shown from memory, never through a URL carrying it).
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Authenticator } from '../auth/authenticator.js';
import { accessToken } from './access-token.js';
import { disconnectSignal } from './disconnect.js';
import { rememberDevice } from './request-device.js';

const CLIENT_PAGE_PATH = '/client/';
const CLIENT_STATUS_PATH = '/client/status';

/** src/http/ and dist/http/ both sit two levels below the package root, where web/ is. */
const DEFAULT_WEB_DIR = fileURLToPath(new URL('../../web/', import.meta.url));

const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

export interface ClientPageDeps {
  auth: Pick<Authenticator, 'authenticate' | 'initialSyncProgress'>;
  /** Where the page's files are; defaults to the package's web/. */
  webDir?: string;
}

interface StaticFile {
  body: Buffer;
  contentType: string;
}

/** Every servable file under `dir`, by its URL path below /client/; other files (.d.ts) are not served. */
function loadFiles(dir: string, prefix = ''): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const name = `${prefix}${entry.name}`;
    if (entry.isDirectory()) {
      for (const [sub, file] of loadFiles(path.join(dir, entry.name), `${name}/`)) files.set(sub, file);
      continue;
    }
    const contentType = entry.name.endsWith('.d.ts') ? undefined : CONTENT_TYPES[path.extname(entry.name)];
    if (contentType) files.set(name, { body: readFileSync(path.join(dir, entry.name)), contentType });
  }
  return files;
}

function sendFile(reply: FastifyReply, file: StaticFile) {
  return reply
    .header('content-type', file.contentType)
    .header('content-security-policy', CONTENT_SECURITY_POLICY)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('cache-control', 'no-cache')
    .send(file.body);
}

export function clientPageRoutes(app: FastifyInstance, deps: ClientPageDeps): void {
  const files = loadFiles(deps.webDir ?? DEFAULT_WEB_DIR);
  const index = files.get('index.html');
  if (!index) throw new Error(`the /client/ page has no index.html in ${deps.webDir ?? DEFAULT_WEB_DIR}`);

  app.get('/client', async (_request, reply) => reply.redirect(CLIENT_PAGE_PATH, 301));
  app.get(CLIENT_PAGE_PATH, async (_request, reply) => sendFile(reply, index));
  for (const [name, file] of files) {
    if (name !== 'index.html') app.get(`${CLIENT_PAGE_PATH}${name}`, async (_request, reply) => sendFile(reply, file));
  }

  // Authenticated as sliding sync is (which also starts polling a new device, as the page's
  // first sync would): only the token's own device is ever described.
  app.get(CLIENT_STATUS_PATH, async (request, reply) => {
    const token = accessToken(request);
    const device = await deps.auth.authenticate(token, disconnectSignal(reply));
    rememberDevice(request, device);
    const progress = deps.auth.initialSyncProgress(device);
    const now = Date.now();
    const started = progress?.startedAt;
    return reply.header('cache-control', 'no-store').send({
      user_id: device.userId,
      device_id: device.deviceId,
      initial_sync: progress && {
        done: progress.done,
        waited_ms: started === undefined ? undefined : (progress.storedAt ?? now) - started,
        bytes_received: progress.bytesReceived,
        rooms: progress.rooms,
      },
    });
  });
}
