// Forwards the Client-Server API requests that the proxy does not serve itself to the
// homeserver, for deployments whose clients use the proxy as their homeserver base URL.
//
// Bodies stream both ways and are never held whole (media uploads and downloads can be
// gigabytes): the client's request stream is undici's request body, and undici's response
// body is piped into the client's response. Method, path, query, headers, status and body pass
// through unchanged, except for hop-by-hop headers (RFC 9110 §7.6.1), which belong to one
// connection, and the X-Forwarded-* headers describing the client's connection to us.
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { BlockList, isIPv4 } from 'node:net';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { TLSSocket } from 'node:tls';
import type { Dispatcher } from 'undici';
import type { Upstream } from '../config.js';
import { homeserverAgent } from './agent.js';
import { UpstreamError } from './errors.js';

/** Meaningful for one connection only: never forwarded in either direction. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * Request headers replaced rather than passed on: undici sets `host` for the homeserver,
 * node already answered `expect: 100-continue` (and undici refuses the header), and the
 * X-Forwarded-Proto/-Host we send describe the client's connection (see requestHeaders).
 */
const REPLACED = new Set(['host', 'expect', 'x-forwarded-proto', 'x-forwarded-host']);

export interface ForwarderOptions {
  /** How long the homeserver may take to start answering once the request is sent, in ms. */
  headersTimeoutMs: number;
  /**
   * Longest silence between two chunks of a response body, in ms; the body as a whole may
   * take as long as it needs (a large download on a slow link). Defaults to headersTimeoutMs.
   */
  bodyIdleTimeoutMs?: number;
  /**
   * Reverse proxies (`addr/prefix`) in front of us whose X-Forwarded-For/-Proto/-Host are
   * passed on; anyone else's are replaced with what we saw (SYNCV3_TRUSTED_PROXIES).
   */
  trustedProxies?: readonly string[];
}

export interface ForwardedResponse {
  statusCode: number;
  statusText: string;
  /** The homeserver's response headers, hop-by-hop ones removed. */
  headers: OutgoingHttpHeaders;
  body: Readable;
}

export interface SendOptions {
  /** Aborts the upstream request, e.g. when the client hangs up. */
  signal?: AbortSignal;
  /** Path and query to request instead of the client's own. */
  url?: string;
  /** Method to use instead of the client's own (e.g. GET for a HEAD the proxy answers itself). */
  method?: string;
  /** Leaves the client's request body unread (for routes that forward only the headers). */
  withoutBody?: boolean;
  /** The client's request body, already read (for requests the proxy must look into). */
  body?: Buffer;
}

export interface Forwarder {
  /**
   * Sends the client's request to the homeserver, streaming its body, and resolves once the
   * response headers arrive. Rejects with an UpstreamError of kind `network` or `timeout`
   * when the homeserver cannot be reached or does not answer in time, or with the abort
   * reason when `signal` aborts.
   */
  send(incoming: IncomingMessage, opts?: SendOptions): Promise<ForwardedResponse>;
  close(): Promise<void>;
}

/** Lower-cased names listed in Connection headers: hop-by-hop for this message too. */
function connectionListed(values: Iterable<string>): Set<string> {
  const listed = new Set<string>();
  for (const value of values) {
    for (const token of value.split(',')) {
      const name = token.trim().toLowerCase();
      if (name) listed.add(name);
    }
  }
  return listed;
}

/** Whether a peer address is one of `ranges` (`addr/prefix`); IPv4-mapped IPv6 counts as IPv4. */
function trustedPeers(ranges: readonly string[]): (address: string | undefined) => boolean {
  if (!ranges.length) return () => false;
  const list = new BlockList();
  for (const range of ranges) {
    const [address = '', prefix = ''] = range.split('/');
    list.addSubnet(address, Number(prefix), isIPv4(address) ? 'ipv4' : 'ipv6');
  }
  return (address) => {
    if (!address) return false;
    const plain = address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
    return list.check(plain, isIPv4(plain) ? 'ipv4' : 'ipv6');
  };
}

/** The client's address as the homeserver should see it (IPv4 rather than IPv4-mapped IPv6). */
function clientAddress(incoming: IncomingMessage): string | undefined {
  const address = incoming.socket.remoteAddress;
  return address?.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/**
 * The headers to send upstream, as a flat name/value list so that repeated headers stay
 * repeated: the client's, minus hop-by-hop and replaced ones, plus X-Forwarded-For, -Proto and
 * -Host. Only from a trusted peer (a reverse proxy of ours) are the incoming X-Forwarded-*
 * believed, the peer's address appended to the chain; from anyone else they are dropped and
 * describe the connection we saw, or a client could choose the IP the homeserver records.
 */
function upstreamRequestHeaders(incoming: IncomingMessage, trusted: (address: string | undefined) => boolean = () => false): string[] {
  const raw = incoming.rawHeaders;
  const pairs: [string, string][] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) pairs.push([raw[i] as string, raw[i + 1] as string]);
  const listed = connectionListed(pairs.filter(([name]) => name.toLowerCase() === 'connection').map(([, value]) => value));
  const chunked = pairs.some(([name]) => name.toLowerCase() === 'transfer-encoding');

  const out: string[] = [];
  const forwardedFor: string[] = [];
  let host: string | undefined;
  // Behind a TLS-terminating reverse proxy (nginx), ours is not the client's connection: that
  // proxy's X-Forwarded-Proto/-Host say how the client came, and the homeserver needs those.
  let proto: string | undefined;
  let forwardedHost: string | undefined;
  const fromProxy = trusted(incoming.socket.remoteAddress);
  for (const [name, value] of pairs) {
    const lower = name.toLowerCase();
    if (lower === 'host') host ??= value;
    if (lower === 'x-forwarded-proto' && fromProxy) proto ??= value.split(',')[0]?.trim();
    if (lower === 'x-forwarded-host' && fromProxy) forwardedHost ??= value.split(',')[0]?.trim();
    if (lower === 'x-forwarded-for') {
      if (fromProxy) forwardedFor.push(value);
      continue;
    }
    if (HOP_BY_HOP.has(lower) || REPLACED.has(lower) || listed.has(lower)) continue;
    // A chunked body's length is unknown; a Content-Length beside it must not survive (RFC 9112 §6.3).
    if (lower === 'content-length' && chunked) continue;
    out.push(name, value);
  }
  const address = clientAddress(incoming);
  if (address) forwardedFor.push(address);
  if (forwardedFor.length) out.push('X-Forwarded-For', forwardedFor.join(', '));
  out.push('X-Forwarded-Proto', proto || ((incoming.socket as Partial<TLSSocket>).encrypted ? 'https' : 'http'));
  const clientHost = forwardedHost || host;
  if (clientHost) out.push('X-Forwarded-Host', clientHost);
  return out;
}

/** The homeserver's response headers minus hop-by-hop ones and those its Connection header lists. */
function clientResponseHeaders(headers: Record<string, string | string[] | undefined>): OutgoingHttpHeaders {
  const connection = headers.connection;
  const listed = connectionListed(connection === undefined ? [] : Array.isArray(connection) ? connection : [connection]);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || listed.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Whether the client's request has a body to forward (node has already checked the framing). */
function hasBody(incoming: IncomingMessage): boolean {
  if (incoming.headers['transfer-encoding'] !== undefined) return true;
  const length = incoming.headers['content-length'];
  return length !== undefined && length !== '0';
}

function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/** Sorts a failure into "homeserver did not answer in time" and "homeserver unreachable". */
function forwardingError(err: unknown): UpstreamError {
  if (err instanceof UpstreamError) return err;
  const code = errorCode(err);
  const message = err instanceof Error ? err.message : String(err);
  if (code && TIMEOUT_CODES.has(code)) return new UpstreamError('timeout', `${code}: ${message}`, {}, { cause: err });
  return new UpstreamError('network', code ? `${code}: ${message}` : message, {}, { cause: err });
}

export function createForwarder(upstream: Upstream, opts: ForwarderOptions): Forwarder {
  // Origin and path apart: a URL built from the client's path would have its dot segments
  // resolved (`/_matrix/../x` becoming `/x`); the path goes upstream exactly as received.
  const base = new URL(upstream.kind === 'url' ? upstream.baseUrl : 'http://localhost');
  const origin = base.origin;
  const basePath = base.pathname.replace(/\/+$/, '');
  // Apart from the pollers' Agent, so that clients' traffic and the long-polls do not queue
  // behind each other. Timeouts are set per request below.
  const dispatcher = homeserverAgent(upstream);
  const bodyTimeout = opts.bodyIdleTimeoutMs ?? opts.headersTimeoutMs;
  const trusted = trustedPeers(opts.trustedProxies ?? []);

  return {
    async send(incoming, sendOpts = {}) {
      const url = sendOpts.url ?? incoming.url ?? '/';
      const signal = sendOpts.signal;
      let res: Dispatcher.ResponseData;
      try {
        res = await dispatcher.request({
          origin,
          path: `${basePath}${url}`,
          method: (sendOpts.method ?? incoming.method ?? 'GET') as Dispatcher.HttpMethod,
          headers: upstreamRequestHeaders(incoming, trusted),
          body: sendOpts.body ?? (!sendOpts.withoutBody && hasBody(incoming) ? incoming : null),
          // undici starts this clock once the request body is sent, so slow uploads are not cut.
          headersTimeout: opts.headersTimeoutMs,
          bodyTimeout,
          signal: signal ?? null,
        });
      } catch (err) {
        // The client went away (or we are shutting down): not the homeserver's fault.
        if (signal?.aborted) throw err;
        throw forwardingError(err);
      }
      return { statusCode: res.statusCode, statusText: res.statusText, headers: clientResponseHeaders(res.headers), body: res.body };
    },
    close: () => dispatcher.close(),
  };
}

/**
 * Writes a forwarded response to the client: status and headers at once (`defaults` fill in
 * headers the homeserver did not send, e.g. CORS), then the body as it arrives. A failure in
 * the middle of the body can no longer become an error response: the client's connection is
 * cut, so it sees a truncated transfer rather than a complete-looking one. Resolves with that
 * failure, or undefined when the whole body was delivered.
 */
export async function streamToClient(
  res: ForwardedResponse,
  outgoing: ServerResponse,
  defaults: Readonly<Record<string, string | number | string[] | undefined>> = {},
): Promise<Error | undefined> {
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(defaults)) if (value !== undefined) headers[name.toLowerCase()] = value;
  Object.assign(headers, res.headers);
  try {
    if (res.statusText) outgoing.writeHead(res.statusCode, res.statusText, headers);
    else outgoing.writeHead(res.statusCode, headers);
    await pipeline(res.body, outgoing);
    return undefined;
  } catch (err) {
    outgoing.destroy();
    res.body.destroy();
    return err instanceof Error ? err : new Error(String(err));
  }
}

/** Reads a body expected to be small (e.g. /versions) into memory, refusing one over `limit` bytes. */
export async function readSmallBody(body: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
      size += buf.length;
      if (size > limit) {
        body.destroy();
        throw new UpstreamError('bad_response', `response body is larger than ${limit} bytes`);
      }
      chunks.push(buf);
    }
  } catch (err) {
    throw forwardingError(err);
  }
  return Buffer.concat(chunks);
}
