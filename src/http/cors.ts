// The Client-Server API must answer browsers from any origin (spec: "Web Browser Clients"), and
// Element Web talks to us from its own origin. Pre-flights are answered here without auth.
import type { FastifyInstance } from 'fastify';

const CORS_HEADERS = {
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'GET, POST, PUT, DELETE, OPTIONS',
  'access-control-allow-headers': 'X-Requested-With, Content-Type, Authorization',
} as const;

export function cors(app: FastifyInstance) {
  app.addHook('onRequest', async (request, reply) => {
    reply.headers(CORS_HEADERS);
    if (request.method === 'OPTIONS') return reply.code(204).send();
  });
}
