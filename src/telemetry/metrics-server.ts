// SYNCV3_PROM: `GET /metrics` in the Prometheus text format, on its own listener (as the Go
// proxy did), so metrics are never exposed on the client-facing address by accident.
import { createServer } from 'node:http';
import type { Registry } from 'prom-client';
import type { Address } from '../config.js';
import type { Logger } from './logger.js';
import { listenSide, type SideListener } from './side-listener.js';

export async function startMetricsServer(registry: Registry, address: Address, logger: Logger): Promise<SideListener> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Only GET /metrics is served here\n');
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => {
        logger.warn({ err }, 'collecting metrics failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('collecting metrics failed\n');
      },
    );
  });
  const listener = await listenSide(server, address);
  logger.info({ url: `${listener.url}/metrics` }, 'serving Prometheus metrics');
  return listener;
}
