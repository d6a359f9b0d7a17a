// The one error type that reaches clients. Every layer may throw it; http/ turns it into
// `{"errcode","error"}` with its status. Constructors exist for each errcode we emit so that
// the wording and status of an errcode live in one place.

export class MatrixError extends Error {
  constructor(
    readonly statusCode: number,
    readonly errcode: string,
    message: string,
    /** Extra top-level fields of the error body, e.g. `soft_logout` or `retry_after_ms`. */
    readonly extra: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'MatrixError';
  }

  toJSON(): Record<string, unknown> {
    return { errcode: this.errcode, error: this.message, ...this.extra };
  }
}

export const unrecognized = (what = 'Unrecognized request') => new MatrixError(404, 'M_UNRECOGNIZED', what);
export const notJson = (why = 'Request body is not valid JSON') => new MatrixError(400, 'M_NOT_JSON', why);
export const badJson = (field: string, why: string) => new MatrixError(400, 'M_BAD_JSON', `${field}: ${why}`, { field });
export const invalidParam = (field: string, why: string) => new MatrixError(400, 'M_INVALID_PARAM', `${field}: ${why}`, { field });
export const tooLarge = (limitBytes: number) => new MatrixError(413, 'M_TOO_LARGE', `Request body is larger than ${limitBytes} bytes`);
export const missingToken = (why = 'Missing access token') => new MatrixError(401, 'M_MISSING_TOKEN', why);
export const unknownToken = (softLogout = false) =>
  new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Unknown or expired access token', { soft_logout: softLogout });
export const unknownPos = () => new MatrixError(400, 'M_UNKNOWN_POS', 'Unknown or expired pos; start a new connection');
/** A newer request on the same connection took over; the client has already moved on. */
export const superseded = () => new MatrixError(400, 'M_UNKNOWN', 'Superseded by a newer request on the same connection');
/** The database went away mid-request (restart, failover): safe to retry. */
export const storageUnavailable = () =>
  new MatrixError(503, 'M_UNKNOWN', 'Storage temporarily unavailable; retry', { retry_after_ms: 1000 });
export const upstreamUnavailable = (why: string) => new MatrixError(502, 'M_UNKNOWN', `Homeserver unavailable: ${why}`);
/** The homeserver keeps answering this device's /sync with responses that cannot be used. */
export const homeserverSyncFailing = () =>
  new MatrixError(502, 'M_UNKNOWN', 'Homeserver sync is failing: its /sync responses for this device cannot be used; retry later', {
    retry_after_ms: 10_000,
  });
export const upstreamTimeout = () => new MatrixError(504, 'M_UNKNOWN', 'Homeserver did not answer in time');
