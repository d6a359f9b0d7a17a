// The client's access token: `Authorization: Bearer …`, or the deprecated `access_token` query
// parameter that older clients still send.
import type { FastifyRequest } from 'fastify';
import { missingToken } from '../matrix-error.js';

export function accessToken(request: FastifyRequest): string {
  const header = request.headers.authorization;
  if (header) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (match?.[1]) return match[1];
  }
  const query = (request.query as Record<string, unknown> | undefined)?.access_token;
  if (typeof query === 'string' && query) return query;
  throw missingToken();
}
