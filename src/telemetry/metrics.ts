// The process's Prometheus metrics: one Registry per proxy (not prom-client's global one), so
// several proxies in one process (tests) keep their counts apart. Built in the composition root
// and handed to whatever layer counts something.
import { Counter, Registry } from 'prom-client';

export interface Metrics {
  registry: Registry;
  /** Classic v2 `/sync` requests forwarded upstream with the token of a device the proxy polls. */
  v2SyncThroughProxy: Counter;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  const v2SyncThroughProxy = new Counter({
    name: 'syncv3_v2_sync_through_proxy_total',
    help: "Clients' own v2 /sync requests forwarded to the homeserver for a device the proxy polls (they take its to-device messages)",
    registers: [registry],
  });
  return { registry, v2SyncThroughProxy };
}
