// What can go wrong talking to the homeserver, sorted by what the caller should do about it:
// a dead token ends the device's poller; rate limits and transient faults are retried after a
// wait; a bad response is skipped (retrying the same bytes would not help forever).

export type UpstreamErrorKind =
  | 'unknown_token' // 401 M_UNKNOWN_TOKEN / M_MISSING_TOKEN: the token is dead
  | 'forbidden' // 403: treated like a dead token, as the Go proxy did
  | 'rate_limited' // 429: wait retryAfterMs
  | 'server' // 5xx: back off
  | 'client' // other 4xx: our request was wrong; back off and log
  | 'network' // connection refused, reset, DNS
  | 'timeout' // no answer within the request timeout
  | 'bad_response'; // 200 with a body that is not the JSON we need

export class UpstreamError extends Error {
  override name = 'UpstreamError';
  constructor(
    readonly kind: UpstreamErrorKind,
    message: string,
    readonly details: { status?: number; errcode?: string; retryAfterMs?: number; softLogout?: boolean; body?: unknown } = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  get tokenDead(): boolean {
    return this.kind === 'unknown_token' || this.kind === 'forbidden';
  }

  get transient(): boolean {
    return this.kind === 'server' || this.kind === 'network' || this.kind === 'timeout' || this.kind === 'rate_limited';
  }
}

/** Classifies a non-2xx answer from its status and Matrix error body. */
export function errorFromResponse(status: number, body: unknown, retryAfterHeader?: string): UpstreamError {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const errcode = typeof b.errcode === 'string' ? b.errcode : undefined;
  const text = `${status}${errcode ? ` ${errcode}` : ''}${typeof b.error === 'string' ? `: ${b.error}` : ''}`;
  if (status === 401) return new UpstreamError('unknown_token', text, { status, errcode, softLogout: b.soft_logout === true, body });
  if (status === 403 && errcode !== 'M_LIMIT_EXCEEDED') return new UpstreamError('forbidden', text, { status, errcode, body });
  if (status === 429 || errcode === 'M_LIMIT_EXCEEDED') {
    const fromBody = typeof b.retry_after_ms === 'number' ? b.retry_after_ms : undefined;
    const fromHeader = retryAfterHeader && /^\d+$/.test(retryAfterHeader) ? Number(retryAfterHeader) * 1000 : undefined;
    return new UpstreamError('rate_limited', text, { status, errcode, retryAfterMs: fromBody ?? fromHeader, body });
  }
  if (status >= 500) return new UpstreamError('server', text, { status, errcode, body });
  return new UpstreamError('client', text, { status, errcode, body });
}
