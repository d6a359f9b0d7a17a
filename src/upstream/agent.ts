// The connection pool to the homeserver, over TCP or its unix socket. Each user of it (the
// pollers' client, the forwarder of clients' requests) has its own, so long-polls and clients'
// traffic do not queue behind each other.
import { Agent } from 'undici';
import type { Upstream } from '../config.js';

export function homeserverAgent(upstream: Upstream): Agent {
  return new Agent({
    connect: upstream.kind === 'unix' ? { socketPath: upstream.path } : {},
    keepAliveTimeout: 60_000,
    // Timeouts are set per request: the Agent's defaults (300 s) would cut a 30-minute initial sync.
    headersTimeout: 0,
    bodyTimeout: 0,
  });
}
