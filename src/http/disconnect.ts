// A signal that aborts when the client goes away before its response is complete, so work
// done for it (a long-poll, an upstream request) stops and nothing is committed for it.
import type { FastifyReply } from 'fastify';

export function disconnectSignal(reply: FastifyReply): AbortSignal {
  const abort = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) abort.abort(new Error('client disconnected'));
  });
  return abort.signal;
}
