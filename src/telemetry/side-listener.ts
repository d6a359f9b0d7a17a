// The operator-only listeners beside the client API (Prometheus on SYNCV3_PROM, profiling on
// SYNCV3_PPROF) are plain node:http servers: nothing of the client API's stack (Fastify hooks,
// CORS, body parsing, forwarding) applies to them, and they stay up while it drains.
import { rm, stat } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { Address } from '../config.js';

export interface SideListener {
  /** e.g. `http://127.0.0.1:2112`, or the unix socket path. */
  url: string;
  close(): Promise<void>;
}

export async function listenSide(server: Server, address: Address): Promise<SideListener> {
  if (address.kind === 'unix') {
    const info = await stat(address.path).catch(() => undefined);
    if (info?.isSocket()) await rm(address.path);
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if (address.kind === 'unix') server.listen(address.path, done);
    else server.listen(address.port, address.host, done);
  });
  let url: string;
  if (address.kind === 'unix') {
    url = address.path;
  } else {
    const bound = server.address();
    const port = typeof bound === 'object' && bound ? bound.port : address.port;
    const host = address.host.includes(':') ? `[${address.host}]` : address.host;
    url = `http://${host}:${port}`;
  }
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // A scrape or a profile download in progress must not hold up shutdown.
        server.closeAllConnections();
      }),
  };
}
