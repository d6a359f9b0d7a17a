// Every error a route throws leaves as Matrix error JSON. Known client mistakes keep their
// 4xx; anything unexpected is logged with the request id and answered with a bland 500 that
// leaks nothing of the cause.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { MatrixError, notJson, storageUnavailable, tooLarge, unrecognized } from '../matrix-error.js';
import type { ErrorReporter } from '../telemetry/error-reporting.js';
import { requestDevice } from './request-device.js';

/** Fastify's own error codes for requests it could not parse. */
function fromFastifyError(err: FastifyError, bodyLimit: number): MatrixError | undefined {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return tooLarge(bodyLimit);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new MatrixError(415, 'M_NOT_JSON', 'Content-Type must be application/json');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return notJson();
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new MatrixError(400, 'M_BAD_JSON', 'Content-Length does not match the body');
    default:
      // Fastify's body parser raises plain SyntaxErrors with a 400 status for malformed JSON.
      if (err.statusCode === 400 && err instanceof SyntaxError) return notJson();
      return undefined;
  }
}

/**
 * PostgreSQL connection loss (restart, failover, admin termination): the request did not
 * commit, so the client may simply retry. SQLSTATE classes 08 (connection) and 57P (shutdown).
 */
function isStorageOutage(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (/^08/.test(code) || /^57P0[1-3]$/.test(code))) return true;
  const message = err instanceof Error ? err.message : '';
  return /Connection terminated|ECONNREFUSED|ECONNRESET/.test(message) && !(err instanceof MatrixError);
}

/**
 * `errors` receives what ends in a 500 (bugs), with the request's method and path, never its
 * query, and the user and device it was authenticated as, if it got that far.
 */
export function errorHandler(bodyLimit: number, errors?: ErrorReporter) {
  return (err: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const matrix = err instanceof MatrixError ? err : isStorageOutage(err) ? storageUnavailable() : fromFastifyError(err, bodyLimit);
    if (matrix) {
      if (matrix.statusCode >= 500) request.log.warn({ err }, 'request failed');
      return reply.code(matrix.statusCode).send(matrix.toJSON());
    }
    request.log.error({ err }, 'unhandled error');
    const device = requestDevice(request);
    errors?.capture(err, {
      user: device?.userId,
      device: device?.deviceId,
      tags: { method: request.method, path: request.url.split('?')[0] ?? '' },
    });
    return reply.code(500).send({ errcode: 'M_UNKNOWN', error: 'Internal server error' });
  };
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply) {
  return reply.code(404).send(unrecognized(`Unrecognized request: ${request.method} ${request.url.split('?')[0]}`).toJSON());
}
