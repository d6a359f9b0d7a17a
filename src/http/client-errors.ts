// Requests that never reach a route: malformed HTTP, a URL or headers over Node's 16 KiB, a
// request not received in time, a URL that cannot be decoded. Fastify's own answers to these
// are not Matrix errors and close the socket without saying so; a client reusing the
// keep-alive connection then meets a reset. Ours are `{"errcode","error"}` with
// `Connection: close`, and the socket is closed gracefully once the answer is out.
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { MatrixError } from '../matrix-error.js';

/** How long a closing socket may take to flush our answer before it is cut. */
const LINGER_MS = 2000;

/** The Matrix error for a request Node's HTTP parser (or its timers) gave up on. */
function clientErrorAnswer(code: string | undefined): MatrixError {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return new MatrixError(431, 'M_TOO_LARGE', 'Request URL or headers are too large');
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new MatrixError(408, 'M_UNKNOWN', 'Request was not received in time');
    default:
      return new MatrixError(400, 'M_UNRECOGNIZED', 'Malformed HTTP request');
  }
}

/** Fastify's `clientErrorHandler`: answers on the bare socket, then closes it. */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Duplex): void {
  // A reset or already closed connection has no one to answer.
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const error = clientErrorAnswer(err.code);
  const body = JSON.stringify(error.toJSON());
  socket.end(
    `HTTP/1.1 ${error.statusCode} ${STATUS_CODES[error.statusCode]}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}

/** Fastify's `frameworkErrors`: a path that does not percent-decode. */
export function frameworkErrors(err: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const error =
    err.code === 'FST_ERR_BAD_URL'
      ? new MatrixError(400, 'M_UNRECOGNIZED', 'Malformed request URL')
      : new MatrixError(400, 'M_UNRECOGNIZED', 'Malformed request');
  void reply.code(error.statusCode).send(error.toJSON());
}

/**
 * Answers a request whose body did not arrive in time and closes its connection: a client
 * trickling a body cannot hold a socket and a request slot for as long as it likes.
 */
export function bodyTimedOut(reply: FastifyReply): void {
  if (reply.sent) return;
  const error = new MatrixError(408, 'M_UNKNOWN', 'Request body was not received in time');
  void reply.header('connection', 'close').code(error.statusCode).send(error.toJSON());
  const socket = reply.raw.socket;
  reply.raw.once('finish', () => socket?.destroySoon());
  setTimeout(() => socket?.destroy(), LINGER_MS).unref();
}
