// The only code that speaks HTTP to the homeserver. One undici Agent (keep-alive, pipelining
// off) for every request; a unix socket upstream is the same client with a socketPath.
import { request, errors as undiciErrors } from 'undici';
import type { Upstream } from '../config.js';
import { secondsSince } from '../telemetry/metrics.js';
import type { Telemetry } from '../telemetry/telemetry.js';
import { homeserverAgent } from './agent.js';
import { startDeadline } from './deadline.js';
import { errorFromResponse, UpstreamError } from './errors.js';
import { type ParseStats, parseRoomEvent, parseSyncResponse, type RoomEvent, type SyncResponse } from './sync-response.js';

export interface Whoami {
  userId: string;
  deviceId: string;
}

export interface SyncParams {
  since?: string;
  /** Long-poll timeout the homeserver may hold the request for, in ms. */
  timeoutMs: number;
  /** A filter definition, sent inline as JSON. */
  filter?: Record<string, unknown>;
  setPresence?: 'offline' | 'online' | 'unavailable';
}

export interface RequestOptions {
  /** Whole-request budget in ms (headers and body). */
  timeoutMs: number;
  signal?: AbortSignal;
  /** Told the size of each piece of the response body as it arrives (first-sync progress). */
  onBodyBytes?: (bytes: number) => void;
}

export interface Homeserver {
  whoami(token: string, opts: RequestOptions): Promise<Whoami>;
  /** `/context` with no events around: the pagination token from just before the event. */
  tokenBefore(token: string, roomId: string, eventId: string, opts: RequestOptions): Promise<string | undefined>;
  sync(token: string, params: SyncParams, opts: RequestOptions): Promise<{ response: SyncResponse; stats: ParseStats }>;
  /** `/messages` backwards from `from`: events newest first (malformed ones dropped), and the token to go on from, absent at the room's start. */
  messagesBefore(token: string, roomId: string, from: string, limit: number, opts: RequestOptions): Promise<RoomHistoryPage>;
  close(): Promise<void>;
}

export interface RoomHistoryPage {
  events: RoomEvent[];
  end: string | undefined;
}

const USER_AGENT = 'syncv3-proxy/0.1';

/** The body as text, telling `onBytes` about each chunk as it arrives. */
async function countedText(body: AsyncIterable<Buffer>, onBytes: (bytes: number) => void): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) {
    chunks.push(chunk);
    onBytes(chunk.length);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export function createHomeserverClient(upstream: Upstream, telemetry?: Pick<Telemetry, 'metrics' | 'tracer'>): Homeserver {
  const origin = upstream.kind === 'url' ? upstream.baseUrl : 'http://localhost';
  const dispatcher = homeserverAgent(upstream);

  /**
   * getJson with a client span and the upstream metrics, labelled by `endpoint` (sync, whoami, context)
   * and the HTTP status, or `network`/`timeout` when none came. The span records the path
   * without its query string; the token is only ever in the Authorization header.
   */
  function measuredGetJson(endpoint: string, path: string, token: string, opts: RequestOptions): Promise<unknown> {
    if (!telemetry) return getJson(path, token, opts, { headers: {}, status: 0 });
    const route = path.split('?')[0] as string;
    const { metrics, tracer } = telemetry;
    return tracer.run(
      `GET ${route}`,
      { 'http.request.method': 'GET', 'url.path': route, endpoint },
      async (span) => {
        const started = performance.now();
        const call: { headers: Record<string, string>; status: number } = { headers: {}, status: 0 };
        tracer.inject(call.headers);
        try {
          const body = await getJson(path, token, opts, call);
          metrics.upstreamDuration.observe({ endpoint, status: String(call.status) }, secondsSince(started));
          span.setAttributes({ 'http.response.status_code': call.status });
          return body;
        } catch (err) {
          if (err instanceof UpstreamError) {
            const status = err.details.status === undefined ? '' : String(err.details.status);
            metrics.upstreamDuration.observe({ endpoint, status: status || err.kind }, secondsSince(started));
            metrics.upstreamErrors.inc({ endpoint, kind: err.kind, status });
            if (status) span.setAttributes({ 'http.response.status_code': Number(status) });
          }
          throw err;
        }
      },
      'client',
    );
  }

  /** `call.headers` are sent along (trace context); `call.status` is set once an answer came. */
  async function getJson(
    path: string,
    token: string,
    opts: RequestOptions,
    call: { headers: Record<string, string>; status: number },
  ): Promise<unknown> {
    const deadline = startDeadline(opts.timeoutMs, opts.signal);
    let res: Awaited<ReturnType<typeof request>>;
    let text: string;
    try {
      res = await request(`${origin}${path}`, {
        dispatcher,
        method: 'GET',
        headers: { ...call.headers, authorization: `Bearer ${token}`, 'user-agent': USER_AGENT, accept: 'application/json' },
        signal: deadline.signal,
      });
      call.status = res.statusCode;
      text = opts.onBodyBytes ? await countedText(res.body, opts.onBodyBytes) : await res.body.text();
    } catch (err) {
      throw transportError(err, deadline.timedOut, opts.timeoutMs);
    } finally {
      // The budget covers headers and body; once the body is read there is nothing left to abort.
      deadline.release();
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      if (res.statusCode >= 200 && res.statusCode < 300) {
        throw new UpstreamError('bad_response', `${path.split('?')[0]}: body is not JSON (${text.length} bytes)`, {
          status: res.statusCode,
        });
      }
    }
    if (res.statusCode < 200 || res.statusCode >= 300) {
      const retryAfter = res.headers['retry-after'];
      throw errorFromResponse(res.statusCode, body, Array.isArray(retryAfter) ? retryAfter[0] : retryAfter);
    }
    return body;
  }

  return {
    async whoami(token, opts) {
      const body = (await measuredGetJson('whoami', '/_matrix/client/v3/account/whoami', token, opts)) as Record<string, unknown> | null;
      if (typeof body?.user_id !== 'string' || typeof body.device_id !== 'string') {
        // Appservice users and some tokens have no device; sliding sync needs one to poll for.
        throw new UpstreamError('bad_response', 'whoami answered without user_id and device_id', { body });
      }
      return { userId: body.user_id, deviceId: body.device_id };
    },

    async tokenBefore(token, roomId, eventId, opts) {
      const path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/context/${encodeURIComponent(eventId)}?limit=0`;
      const body = (await measuredGetJson('context', path, token, opts)) as { start?: unknown } | null;
      return typeof body?.start === 'string' && body.start ? body.start : undefined;
    },

    async messagesBefore(token, roomId, from, limit, opts) {
      const query = new URLSearchParams({ from, dir: 'b', limit: String(limit) });
      const path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?${query}`;
      const body = (await measuredGetJson('messages', path, token, opts)) as { chunk?: unknown; end?: unknown } | null;
      if (!Array.isArray(body?.chunk)) throw new UpstreamError('bad_response', '/messages answered without a chunk', { body });
      const events = body.chunk.map((e) => parseRoomEvent(asSyncFormat(e))).filter((e): e is RoomEvent => e !== undefined);
      return { events, end: typeof body.end === 'string' && body.end ? body.end : undefined };
    },

    async sync(token, params, opts) {
      const query = new URLSearchParams({ timeout: String(params.timeoutMs) });
      if (params.since) query.set('since', params.since);
      if (params.filter) query.set('filter', JSON.stringify(params.filter));
      if (params.setPresence) query.set('set_presence', params.setPresence);
      const body = await measuredGetJson('sync', `/_matrix/client/v3/sync?${query}`, token, opts);
      const parsed = parseSyncResponse(body);
      if ('error' in parsed) {
        telemetry?.metrics.upstreamErrors.inc({ endpoint: 'sync', kind: 'bad_response', status: '200' });
        throw new UpstreamError('bad_response', parsed.error, { body });
      }
      return parsed;
    },

    close: () => dispatcher.close(),
  };
}

/**
 * /messages serves events in the legacy client format: `room_id`, `user_id` (the sender) and
 * top-level copies of some `unsigned` fields, which v2 /sync leaves out. Stored events are the
 * /sync shape, whichever endpoint brought them.
 */
const LEGACY_COPIES = [
  'room_id',
  'user_id',
  'age',
  'redacted_because',
  'replaces_state',
  'prev_content',
  'invite_room_state',
  'knock_room_state',
];
function asSyncFormat(event: unknown): unknown {
  if (typeof event !== 'object' || event === null) return event;
  const out = { ...(event as Record<string, unknown>) };
  for (const key of LEGACY_COPIES) delete out[key];
  return out;
}

function transportError(err: unknown, timedOut: boolean, timeoutMs: number): Error {
  if (timedOut) return new UpstreamError('timeout', `no answer within ${timeoutMs} ms`, {}, { cause: err });
  // The caller's own signal (shutdown): not an upstream fault; let it propagate as an abort.
  if (err instanceof Error && err.name === 'AbortError') return err;
  const code = (err as { code?: string }).code;
  const what = err instanceof undiciErrors.UndiciError || code ? `${code ?? ''} ${(err as Error).message}`.trim() : String(err);
  return new UpstreamError('network', what, {}, { cause: err });
}
