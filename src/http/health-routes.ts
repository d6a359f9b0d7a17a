// Liveness and readiness for orchestrators: /health says the process answers; /ready says it
// can do useful work (database reachable, schema current), so a load balancer holds traffic
// back during a migration or a database outage.
import type { FastifyInstance } from 'fastify';

/** Resolves with details when ready; rejects with the reason when not. */
export type ReadinessCheck = () => Promise<Record<string, unknown>>;

export function healthRoutes(app: FastifyInstance, ready: ReadinessCheck) {
  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/ready', async (request, reply) => {
    try {
      return { status: 'ready', ...(await ready()) };
    } catch (err) {
      request.log.warn({ err: (err as Error).message }, 'not ready');
      return reply.code(503).send({ status: 'unavailable', reason: (err as Error).message });
    }
  });
}
