// The client's access token: `Authorization: Bearer …`, or the deprecated `access_token` query
// parameter that older clients still send. Read by Synapse's rules: one or the other, never
// both (which one would the homeserver check?), one header, and a header that is a Bearer one.
import type { FastifyRequest } from 'fastify';
import { missingToken } from '../matrix-error.js';

export function accessToken(request: FastifyRequest): string {
  const raw = request.raw.rawHeaders;
  let headers = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]?.toLowerCase() === 'authorization') headers++;
  const query = (request.query as Record<string, unknown> | undefined)?.access_token;
  if (headers > 0) {
    if (query !== undefined) throw missingToken('Mixing Authorization headers and access_token query parameters.');
    if (headers > 1) throw missingToken('Too many Authorization headers.');
    const match = /^Bearer ([^ ]+)$/.exec(request.headers.authorization ?? '');
    if (!match?.[1]) throw missingToken('Invalid Authorization header.');
    return match[1];
  }
  if (typeof query === 'string' && query) return query;
  // Repeated (`?access_token=a&access_token=b`): the first, as Synapse takes it.
  if (Array.isArray(query) && typeof query[0] === 'string' && query[0]) return query[0];
  throw missingToken();
}
