// The front door: what lets clients find the proxy and reach the homeserver through it.
//
// Clients discover sliding sync only from `GET /_matrix/client/versions` on their homeserver
// base URL (`unstable_features["org.matrix.simplified_msc3575"]`) and send the sync request to
// that same base URL. So the proxy answers /versions with the homeserver's answer plus that
// flag, and, for deployments whose `.well-known` points clients at the proxy, forwards every
// other request under /_matrix/ and /_synapse/client/ to the homeserver, bodies streamed.
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Authenticator } from '../auth/authenticator.js';
import { tooLarge, unrecognized, upstreamTimeout, upstreamUnavailable } from '../matrix-error.js';
import type { Metrics } from '../telemetry/metrics.js';
import { packageVersion } from '../telemetry/telemetry.js';
import { UpstreamError } from '../upstream/errors.js';
import { type ForwardedResponse, type Forwarder, readSmallBody, streamToClient } from '../upstream/forwarder.js';
import { accessToken } from './access-token.js';
import type { RouteConfig } from './app.js';
import { disconnectSignal } from './disconnect.js';
import { type LogoutRequest, listedDevices, logoutRequest } from './logout-requests.js';
import { servedFeatures } from './unserved-features.js';

const VERSIONS_PATH = '/_matrix/client/versions';
const SERVER_JSON_PATH = '/client/server.json';
/** The `unstable_features` flag by which Element X and Element Web find sliding sync (MSC4186). */
const SLIDING_SYNC_FEATURE = 'org.matrix.simplified_msc3575';
/** Everything under these is forwarded unless a route of our own matches first. */
const FORWARDED_PREFIXES = ['/_matrix/', '/_synapse/client/'] as const;

/** A /versions answer is a few KiB; anything far larger is not one. */
const VERSIONS_BODY_LIMIT = 1024 * 1024;
/** A Matrix error body is tiny; a 401 body is read whole to see whether it says the token is dead. */
const ERROR_BODY_LIMIT = 64 * 1024;
/** A `delete_devices` body lists device ids and carries user-interactive auth: small. */
const DELETE_DEVICES_BODY_LIMIT = 1024 * 1024;
const V2_SYNC_PATH = /^\/_matrix\/client\/(?:v3|r0)\/sync$/;
const FORGET_PATH = /^\/_matrix\/client\/(?:v3|r0)\/rooms\/([^/]+)\/forget$/;
const WARN_EVERY_MS = 3_600_000;

/**
 * Where a forgotten room is dropped: the one owner of user-room changes (the accumulator, wired
 * in proxy.ts), which deletes the row and announces it under a committed position.
 */
export interface ForgottenRooms {
  forget(userId: string, roomId: string): Promise<boolean>;
}

export interface FrontDoorDeps {
  forwarder: Forwarder;
  metrics: Pick<Metrics, 'v2SyncThroughProxy'>;
  /** Which device a token is; told of logouts and of tokens the homeserver refuses, before the client is answered. */
  tokens: Pick<Authenticator, 'known' | 'identify' | 'loggedOut' | 'tokenRefused'>;
  /** Where forgotten rooms go; absent: forgets are only forwarded. */
  rooms?: ForgottenRooms;
  /** The homeserver's base URL (SYNCV3_SERVER), shown in /client/server.json; absent for a unix socket. */
  serverUrl?: string;
  /** Shown in /client/server.json; defaults to package.json's version. */
  version?: string;
}

/** The Matrix error a client gets when the homeserver could not be asked. */
function upstreamFailure(err: unknown, request: FastifyRequest): unknown {
  if (!(err instanceof UpstreamError)) return err;
  // The details (addresses, error codes) go to the log, not to clients.
  request.log.warn({ err: err.message, path: request.url.split('?')[0] }, 'homeserver request failed');
  return err.kind === 'timeout' ? upstreamTimeout() : upstreamUnavailable(err.kind === 'bad_response' ? 'bad response' : 'unreachable');
}

/**
 * Whether a path has `.` or `..` segments, percent-encoded or not. Forwarded, they could climb
 * out of the forwarded prefixes wherever they are resolved (nginx in front of the homeserver
 * does), e.g. `/_matrix/../_synapse/admin/…`. No Client-Server API path has them.
 */
function hasDotSegments(path: string): boolean {
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return true;
  }
  return decoded.split(/[\\/]/).some((segment) => segment === '.' || segment === '..');
}

/** The client's token, if it sent one (and one only). */
function optionalToken(request: FastifyRequest): string | undefined {
  try {
    return accessToken(request);
  } catch {
    return undefined;
  }
}

/** Reads a client's request body that the proxy must look into, refusing one over `limit` bytes. */
async function readRequestBody(incoming: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of incoming) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLarge(limit);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function frontDoorRoutes(app: FastifyInstance, deps: FrontDoorDeps): void {
  const version = deps.version ?? packageVersion();

  // GET /_matrix/client/versions: the homeserver's answer, with sliding sync advertised and
  // nothing advertised that the proxy does not serve.
  // The client's headers go along (Synapse adds per-user features for an access token).
  app.get(VERSIONS_PATH, async (request, reply) => {
    const signal = disconnectSignal(reply);
    let upstream: ForwardedResponse;
    let body: Buffer;
    try {
      upstream = await deps.forwarder.send(request.raw, { signal, method: 'GET', withoutBody: true });
      body = await readSmallBody(upstream.body, VERSIONS_BODY_LIMIT);
    } catch (err) {
      if (signal.aborted) return reply.code(499).send();
      throw upstreamFailure(err, request);
    }
    const contentType = upstream.headers['content-type'];
    if (upstream.statusCode < 200 || upstream.statusCode >= 300) {
      // The homeserver's own failure: pass it on as it was.
      reply.code(upstream.statusCode);
      if (typeof contentType === 'string') reply.header('content-type', contentType);
      return reply.send(body);
    }
    let versions: unknown;
    try {
      versions = JSON.parse(body.toString('utf8'));
    } catch {
      versions = undefined;
    }
    if (!isObject(versions)) {
      throw upstreamFailure(new UpstreamError('bad_response', '/versions answered with something other than a JSON object'), request);
    }
    // Less the flags of features the proxy's sliding sync does not carry (unserved-features.ts).
    const features = isObject(versions.unstable_features) ? servedFeatures(versions.unstable_features) : {};
    return reply
      .header('content-type', 'application/json; charset=utf-8')
      .send(JSON.stringify({ ...versions, unstable_features: { ...features, [SLIDING_SYNC_FEATURE]: true } }));
  });

  // As the Go proxy: {"server": SYNCV3_SERVER, "version"} for the /client/ debugging page.
  // Configured, never taken from the request: a Host header put there would be served back.
  app.get(SERVER_JSON_PATH, async () => ({ server: deps.serverUrl, version }));

  // A client's own v2 /sync with the token of a device we poll takes that device's to-device
  // messages away from the poller (the homeserver deletes what it delivers): warn and count.
  const warnedAt = new Map<string, number>();
  async function noticeV2Sync(request: FastifyRequest): Promise<void> {
    let token: string;
    try {
      token = accessToken(request);
    } catch {
      return;
    }
    const device = await deps.tokens.known(token);
    if (!device) return;
    deps.metrics.v2SyncThroughProxy.inc();
    const key = `${device.userId}\u0000${device.deviceId}`;
    const t = Date.now();
    const last = warnedAt.get(key);
    if (last !== undefined && t - last < WARN_EVERY_MS) return;
    if (warnedAt.size >= 10_000) {
      for (const [k, at] of warnedAt) if (t - at >= WARN_EVERY_MS) warnedAt.delete(k);
    }
    warnedAt.set(key, t);
    request.log.warn(
      { userId: device.userId, deviceId: device.deviceId },
      'a client ran v2 /sync through the proxy for a device the proxy polls: to-device messages it receives never reach sliding sync',
    );
  }

  // Kicked and banned rooms are listed until forgotten: once the homeserver has forgotten one,
  // the user's row goes and the caches hear of it, before the client sees the answer.
  async function forgetForUser(request: FastifyRequest, encodedRoomId: string): Promise<void> {
    const rooms = deps.rooms;
    const token = optionalToken(request);
    if (!rooms || token === undefined) return;
    const who = await deps.tokens.identify(token);
    if (who) await rooms.forget(who.userId, decodeURIComponent(encodedRoomId));
  }

  /**
   * A logout on its way upstream: whose it is must be known before it is sent (the token may
   * be dead after), and a `delete_devices` body is read, to learn which devices it deletes.
   */
  async function prepareLogout(request: FastifyRequest, logout: LogoutRequest, signal: AbortSignal) {
    const token = optionalToken(request);
    const tokens = deps.tokens;
    if (token === undefined) return undefined;
    const body = logout.kind === 'listed_devices' ? await readRequestBody(request.raw, DELETE_DEVICES_BODY_LIMIT) : undefined;
    const who = await tokens.identify(token, signal);
    if (!who) return { body };
    const deviceIds =
      logout.kind === 'all_devices'
        ? undefined
        : logout.kind === 'this_device'
          ? [who.deviceId]
          : logout.kind === 'device'
            ? [logout.deviceId]
            : listedDevices(body ?? Buffer.alloc(0));
    const ownEnded = deviceIds === undefined || deviceIds.includes(who.deviceId);
    return { body, done: () => tokens.loggedOut(who.userId, deviceIds, ownEnded ? token : undefined) };
  }

  /**
   * A 401 M_UNKNOWN_TOKEN for a forwarded request: the token died upstream, and is refused here
   * before the client hears so. The (small) body was read to see that, so it is put back.
   */
  async function noticeDeadToken(request: FastifyRequest, upstream: ForwardedResponse): Promise<ForwardedResponse> {
    const token = optionalToken(request);
    if (upstream.statusCode !== 401 || token === undefined) return upstream;
    const body = await readSmallBody(upstream.body, ERROR_BODY_LIMIT);
    let error: { errcode?: unknown; soft_logout?: unknown } | undefined;
    try {
      error = JSON.parse(body.toString('utf8')) as typeof error;
    } catch {
      error = undefined;
    }
    if (error?.errcode === 'M_UNKNOWN_TOKEN') await deps.tokens.tokenRefused(token, error.soft_logout === true);
    return { ...upstream, body: Readable.from([body]) };
  }

  async function forward(request: FastifyRequest, reply: FastifyReply) {
    const path = (request.raw.url ?? '').split('?')[0] ?? '';
    if (hasDotSegments(path)) throw unrecognized(`Unrecognized request: ${request.method} ${path}`);
    const forgotten = request.method === 'POST' ? FORGET_PATH.exec(path)?.[1] : undefined;
    if (request.method === 'GET' && V2_SYNC_PATH.test(path)) {
      // Alongside the forwarding, never in its way: the client's request goes on regardless.
      void noticeV2Sync(request).catch((err) => request.log.warn({ err }, 'checking a v2 /sync token failed'));
    }
    const signal = disconnectSignal(reply);
    const logout = logoutRequest(request.method, path);
    let upstream: ForwardedResponse;
    let loggedOut: (() => Promise<void>) | undefined;
    try {
      const prepared = logout ? await prepareLogout(request, logout, signal) : undefined;
      loggedOut = prepared?.done;
      upstream = await deps.forwarder.send(request.raw, { signal, body: prepared?.body });
      upstream = await noticeDeadToken(request, upstream);
    } catch (err) {
      if (signal.aborted) return reply.code(499).send();
      throw upstreamFailure(err, request);
    }
    // The homeserver ended these tokens: no request may be served with them once the client knows.
    if (loggedOut && upstream.statusCode >= 200 && upstream.statusCode < 300) await loggedOut();
    if (forgotten !== undefined && upstream.statusCode >= 200 && upstream.statusCode < 300) {
      // The homeserver has forgotten it either way: a failure here only leaves the room listed.
      await forgetForUser(request, forgotten).catch((err) => request.log.warn({ err }, 'dropping a forgotten room failed'));
    }
    // From here on the response is ours to write, byte for byte; Fastify stays out of it.
    reply.hijack();
    const failure = await streamToClient(upstream, reply.raw, reply.getHeaders());
    if (failure && !signal.aborted) request.log.warn({ err: failure.message, path }, 'forwarded response cut short');
    request.log.debug({ method: request.method, path, status: upstream.statusCode, ms: Math.round(reply.elapsedTime) }, 'forwarded');
  }

  // Own scope, own content-type parser: forwarded bodies are left as the raw stream (no JSON
  // parsing, no body limit) for the forwarder to pipe upstream. Our own routes under the same
  // prefixes (sliding sync, /versions) are static and win over these wildcards.
  app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null));
    const config: RouteConfig = { streamsBody: true };
    for (const prefix of FORWARDED_PREFIXES) scope.all(`${prefix}*`, { config }, forward);
  });
}
