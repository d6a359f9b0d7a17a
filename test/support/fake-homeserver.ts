// A programmable Matrix homeserver for integration tests. Built on node:http alone so that it
// shares nothing with the proxy's own HTTP stack: a bug there cannot hide itself here.
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  token: string | undefined;
  body: unknown;
  headers: IncomingHttpHeaders;
}

export interface FakeResponse {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export type Fault = FakeResponse | { delayMs: number } | { raw: string } | { hangUp: true };

export type RouteHandler = (req: RecordedRequest) => FakeResponse | undefined | Promise<FakeResponse | undefined>;

export interface FakeHomeserver {
  url: string;
  /** Register an access token for a user/device; whoami answers for it. */
  addToken(token: string, userId: string, deviceId: string): void;
  /** Make a token dead: every endpoint answers 401 M_UNKNOWN_TOKEN (soft_logout as given). */
  expireToken(token: string, softLogout?: boolean): void;
  /** Queue a v2 /sync body for the token; next_batch defaults to the count of bodies served so far. */
  queueSync(token: string, body: Record<string, unknown>): void;
  /** Queue a fault for the token's next /sync; faults go before queued bodies. */
  queueFault(token: string, fault: Fault): void;
  /** Every request seen, in arrival order. */
  requests: RecordedRequest[];
  /** Resolves with the first /sync of this token with this since (undefined = initial), past or future. */
  waitForSync(token: string, since?: string, timeoutMs?: number): Promise<RecordedRequest>;
  syncCount(token: string): number;
  /** Extra handler consulted before the defaults, newest first; answering undefined falls through. */
  route(method: string, pathPrefix: string, handler: RouteHandler): void;
  /**
   * A room's whole history (oldest first) behind /rooms/{id}/messages, paginated for real: a
   * token names the event it paginates back from, `end` is absent at the room's start.
   */
  serveHistory(roomId: string, events: { event_id: string }[], opts?: HistoryOptions): RoomHistory;
  close(): Promise<void>;
}

export interface HistoryOptions {
  /** Awaited before each /messages answer (a gate the test opens). */
  gate?: () => Promise<void>;
  /** Answer this instead of the history (an error). */
  fail?: FakeResponse;
}

export interface RoomHistory {
  /** The token to paginate back from just before events[index] (a v2 timeline's prev_batch). */
  before(index: number): string;
  /** /messages requests seen for the room. */
  readonly requests: RecordedRequest[];
}

interface TokenInfo {
  userId: string;
  deviceId: string;
  dead?: { softLogout: boolean };
}

interface PerToken {
  bodies: Record<string, unknown>[];
  faults: Fault[];
  served: number;
  wakers: Set<() => void>;
}

interface SyncWatcher {
  token: string;
  since: string | undefined;
  resolve: (req: RecordedRequest) => void;
}

const SYNC_PATHS = new Set(['/_matrix/client/v3/sync', '/_matrix/client/r0/sync']);

function matrixError(status: number, errcode: string, error: string, extra: Record<string, unknown> = {}): FakeResponse {
  return { status, body: { errcode, error, ...extra } };
}

function defaultFaultBody(status: number): Record<string, unknown> {
  if (status === 401) return { errcode: 'M_UNKNOWN_TOKEN', error: 'fault: token rejected', soft_logout: false };
  if (status === 429) return { errcode: 'M_LIMIT_EXCEEDED', error: 'fault: too many requests', retry_after_ms: 100 };
  return { errcode: 'M_UNKNOWN', error: `fault: status ${status}` };
}

/** Waits ms, or less when the signal fires first; never rejects. */
function pause(ms: number, signal: AbortSignal, wake?: Set<() => void>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      wake?.delete(done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    signal.addEventListener('abort', done, { once: true });
    wake?.add(done);
    if (signal.aborted) done();
  });
}

function tokenOf(req: IncomingMessage, query: Record<string, string>): string | undefined {
  const auth = req.headers.authorization;
  const bearer = auth?.match(/^Bearer\s+(.+)$/i)?.[1];
  return bearer ?? query.access_token;
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function sendText(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  if (res.destroyed || res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(text);
}

function send(res: ServerResponse, answer: FakeResponse): void {
  sendText(res, answer.status, answer.body === undefined ? '' : JSON.stringify(answer.body), answer.headers);
}

function deadTokenError(softLogout: boolean): FakeResponse {
  return matrixError(401, 'M_UNKNOWN_TOKEN', 'Access token has expired', { soft_logout: softLogout });
}

export async function startFakeHomeserver(opts: { maxWaitMs?: number } = {}): Promise<FakeHomeserver> {
  const maxWaitMs = opts.maxWaitMs ?? 30_000;
  const tokens = new Map<string, TokenInfo>();
  const perToken = new Map<string, PerToken>();
  const routes: { method: string; prefix: string; handler: RouteHandler }[] = [];
  const watchers = new Set<SyncWatcher>();
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();
  const inflight = new Set<Promise<void>>();
  const closing = new AbortController();

  const stateOf = (token: string): PerToken => {
    let s = perToken.get(token);
    if (!s) {
      s = { bodies: [], faults: [], served: 0, wakers: new Set() };
      perToken.set(token, s);
    }
    return s;
  };
  const wake = (token: string) => {
    for (const w of [...stateOf(token).wakers]) w();
  };

  // The loop re-reads the queues after every wake-up, so a body or fault queued while a
  // long-poll waits is served to that request, and competing requests never both take it.
  async function serveSync(rec: RecordedRequest, token: string, res: ServerResponse, gone: () => boolean): Promise<void> {
    const state = stateOf(token);
    const timeout = Number(rec.query.timeout ?? 0);
    let deadline = Date.now() + Math.min(Number.isFinite(timeout) && timeout > 0 ? timeout : 0, maxWaitMs);
    for (;;) {
      if (gone()) return;
      if (closing.signal.aborted) break;
      const dead = tokens.get(token)?.dead;
      if (dead) return send(res, deadTokenError(dead.softLogout));
      const fault = state.faults.shift();
      if (fault) {
        if ('delayMs' in fault) {
          const waited = Date.now();
          await pause(fault.delayMs, closing.signal);
          deadline += Date.now() - waited;
          continue;
        }
        if ('hangUp' in fault) {
          res.socket?.destroy();
          return;
        }
        if ('raw' in fault) return sendText(res, 200, fault.raw);
        send(res, { ...fault, body: fault.body === undefined ? defaultFaultBody(fault.status) : fault.body });
        return;
      }
      const body = state.bodies.shift();
      if (body) {
        state.served++;
        send(res, { status: 200, body: { ...body, next_batch: body.next_batch ?? String(state.served) } });
        return;
      }
      const left = deadline - Date.now();
      if (left <= 0) break;
      await pause(left, closing.signal, state.wakers);
    }
    send(res, { status: 200, body: { next_batch: rec.query.since ?? '0' } });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const query = Object.fromEntries(url.searchParams);
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query,
      token: tokenOf(req, query),
      body: await readBody(req),
      headers: req.headers,
    };
    requests.push(rec);
    let finished = false;
    res.on('close', () => {
      finished = true;
      // Let a long-poll whose client went away stop waiting, so it cannot swallow a queued body.
      if (rec.token !== undefined) wake(rec.token);
    });
    const gone = () => finished || res.destroyed;

    const isSync = rec.method === 'GET' && SYNC_PATHS.has(rec.path);
    if (isSync) {
      for (const w of [...watchers]) {
        if (w.token === rec.token && w.since === rec.query.since) {
          watchers.delete(w);
          w.resolve(rec);
        }
      }
    }

    const info = rec.token === undefined ? undefined : tokens.get(rec.token);
    if (info?.dead) {
      return send(res, deadTokenError(info.dead.softLogout));
    }
    for (const r of routes) {
      if ((r.method === '*' || r.method === rec.method) && rec.path.startsWith(r.prefix)) {
        const answer = await r.handler(rec);
        if (answer) return send(res, answer);
      }
    }
    if (rec.method === 'GET' && rec.path === '/_matrix/client/versions') {
      return send(res, { status: 200, body: { versions: ['v1.11', 'v1.12'], unstable_features: {} } });
    }
    const authed = rec.path === '/_matrix/client/v3/account/whoami' || isSync;
    if (!authed) return send(res, matrixError(404, 'M_UNRECOGNIZED', 'Unrecognized request'));
    if (rec.token === undefined) return send(res, matrixError(401, 'M_MISSING_TOKEN', 'Missing access token'));
    if (!info) return send(res, matrixError(401, 'M_UNKNOWN_TOKEN', 'Unrecognised access token', { soft_logout: false }));
    if (!isSync) return send(res, { status: 200, body: { user_id: info.userId, device_id: info.deviceId } });
    return serveSync(rec, rec.token, res, gone);
  }

  const server = createServer((req, res) => {
    const work = handle(req, res)
      .catch((err: unknown) => send(res, matrixError(500, 'M_UNKNOWN', `fake homeserver failed: ${String(err)}`)))
      .finally(() => inflight.delete(work));
    inflight.add(work);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    addToken(token, userId, deviceId) {
      tokens.set(token, { userId, deviceId });
    },
    expireToken(token, softLogout = false) {
      const info = tokens.get(token) ?? { userId: '', deviceId: '' };
      tokens.set(token, { ...info, dead: { softLogout } });
      wake(token);
    },
    queueSync(token, body) {
      stateOf(token).bodies.push(body);
      wake(token);
    },
    queueFault(token, fault) {
      stateOf(token).faults.push(fault);
      wake(token);
    },
    syncCount(token) {
      return requests.filter((r) => r.token === token && r.method === 'GET' && SYNC_PATHS.has(r.path)).length;
    },
    waitForSync(token, since, timeoutMs = 5000) {
      const seen = requests.find((r) => r.token === token && SYNC_PATHS.has(r.path) && r.query.since === since);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const watcher: SyncWatcher = {
          token,
          since,
          resolve: (req) => {
            clearTimeout(timer);
            resolve(req);
          },
        };
        const timer = setTimeout(() => {
          watchers.delete(watcher);
          const sinces = requests.filter((r) => r.token === token && SYNC_PATHS.has(r.path)).map((r) => r.query.since ?? '(initial)');
          reject(new Error(`no /sync with since=${since ?? '(initial)'} within ${timeoutMs} ms; seen: [${sinces.join(', ')}]`));
        }, timeoutMs);
        watchers.add(watcher);
      });
    },
    route(method, pathPrefix, handler) {
      routes.unshift({ method: method.toUpperCase(), prefix: pathPrefix, handler });
    },
    serveHistory(roomId, events, opts = {}) {
      const prefix = `hist~${roomId}~`;
      const seen: RecordedRequest[] = [];
      routes.unshift({
        method: 'GET',
        prefix: `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages`,
        handler: async (req) => {
          seen.push(req);
          await opts.gate?.();
          if (opts.fail) return opts.fail;
          const from = req.query.from ?? '';
          if (req.query.dir !== 'b' || !from.startsWith(prefix)) return matrixError(400, 'M_INVALID_PARAM', `unknown token ${from}`);
          const index = Number(from.slice(prefix.length));
          const limit = Math.min(Number(req.query.limit ?? 10), 1000);
          const start = Math.max(0, index - limit);
          const chunk = events.slice(start, index).reverse();
          const body: Record<string, unknown> = { chunk, start: from };
          if (start > 0) body.end = `${prefix}${start}`;
          return { status: 200, body };
        },
      });
      return { before: (index) => `${prefix}${index}`, requests: seen };
    },
    async close() {
      if (closing.signal.aborted) return;
      // Release long-polls first so they answer empty, then cut whatever is still open
      // (keep-alive sockets, stuck custom handlers) so no test waits on a socket.
      closing.abort();
      const settled = Promise.allSettled([...inflight]);
      await Promise.race([settled, new Promise((r) => setTimeout(r, 500).unref())]);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
