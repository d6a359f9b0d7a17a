// The process's Prometheus metrics: one Registry per proxy (not prom-client's global one), so
// several proxies in one process (tests) keep their counts apart. Built in the composition root
// and handed to whatever layer counts something.
//
// Every metric is registered whether or not SYNCV3_PROM is set (counting is a few nanoseconds,
// and the code paths stay the same in tests and production); only the listener that serves
// them is optional. Names the Go proxy had keep its names and meanings (namespace
// `sliding_sync`, `_secs` histograms), because operators' dashboards use them; ours are
// `syncv3_*` in Prometheus base units. Gauges of things that already exist elsewhere (pollers,
// connections, caches, the database pool, the to-device backlog) are read when scraped.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/** What gauges read at scrape time; set once the parts they read exist. */
export interface ScrapeSources {
  pollers: () => number;
  activeConnections: () => number;
  cachedRooms: () => number;
  cachedUsers: () => number;
  /** To-device messages stored and not yet acknowledged, all devices together. */
  toDeviceBacklog: () => Promise<number>;
  dbPool: () => { total: number; idle: number; waiting: number };
}

export interface Metrics {
  registry: Registry;
  /** Classic v2 `/sync` requests forwarded upstream with the token of a device the proxy polls. */
  v2SyncThroughProxy: Counter;
  /** sliding_sync_poller_total_num_polls: every v2 /sync request a poller made. */
  polls: Counter;
  /** sliding_sync_poller_process_duration_secs: storing one v2 response, from its arrival to its bus messages. */
  pollProcessDuration: Histogram<'initial' | 'first'>;
  /** syncv3_poller_failures_total: failed polls by what went wrong. */
  pollFailures: Counter<'kind'>;
  /** syncv3_poller_skipped_responses_total: unusable v2 responses skipped past (their rooms' gaps marked). */
  skippedResponses: Counter;
  /** sliding_sync_poller_num_payloads: bus messages published by the ingest side. */
  busPublished: Counter<'payload_type'>;
  /** sliding_sync_api_num_payloads: bus messages handled by subscribers (caches, waiting requests). */
  busDelivered: Counter<'payload_type'>;
  /** syncv3_bus_lag_seconds: from an ingest commit until every subscriber has handled its messages. */
  busLag: Histogram;
  /** syncv3_bus_remote_lag_seconds (SYNCV3_CLUSTER): from another process sending a bus message until it arrives here. */
  busRemoteLag: Histogram;
  /** syncv3_ingest_duration_seconds: the accumulator's transaction for one v2 response (or several devices' repeats). */
  ingestDuration: Histogram;
  /** sliding_sync_api_setup_duration_secs: authentication and waiting for the device's initial sync. */
  apiSetupDuration: Histogram<'initial'>;
  /** sliding_sync_api_process_duration_secs: the engine's work for a request, long-poll waiting excluded. */
  apiProcessDuration: Histogram<'initial'>;
  /** sliding_sync_api_expiry_conn_timed_out: connections expired for idleness (SYNCV3_CONNECTION_TTL_SECS). */
  connsExpiredIdle: Counter;
  /** sliding_sync_api_destroyed_conns: connections destroyed for any reason. */
  connsDestroyed: Counter;
  /** sliding_sync_poller_timeline_size: events in each room timeline of a v2 response, by `limited` ("limited" or "unlimited"). */
  pollTimelineSize: Histogram<'limited'>;
  /** sliding_sync_poller_gappy_state_size: events in each joined room's state block of an incremental (gappy) v2 response. */
  pollGappyStateSize: Histogram;
  /** sliding_sync_poller_num_outstanding_sync_v2_reqs: v2 /sync requests sent and not yet answered. */
  outstandingPolls: Gauge;
  /** sliding_sync_api_num_devices_pending_ensure_polling: devices whose requests wait for their initial sync. */
  devicesPendingEnsurePolling: Gauge;
  /** sliding_sync_api_slow_requests: sliding sync requests answered SLOW_REQUEST_SECS or more after they arrived. */
  apiSlowRequests: Counter;
  /** syncv3_upstream_request_duration_seconds by endpoint and HTTP status (or network/timeout). */
  upstreamDuration: Histogram<'endpoint' | 'status'>;
  /** syncv3_upstream_errors_total by endpoint, error kind and status. */
  upstreamErrors: Counter<'endpoint' | 'kind' | 'status'>;
  /** syncv3_history_fetches_total: /messages requests for history before a room's stored timeline. */
  historyFetches: Counter;
  /** syncv3_history_events_total: events those requests placed in stored timelines. */
  historyEvents: Counter;
  /** syncv3_history_fetch_failures_total by kind (upstream error kind, store, overlap, hidden). */
  historyFailures: Counter<'kind'>;
  /** syncv3_history_fetch_duration_seconds: one fetch, request and storing. */
  historyDuration: Histogram;
  /** Points the scrape-time gauges at the running parts; a source left out reads as 0. */
  setSources(sources: Partial<ScrapeSources>): void;
}

export interface MetricsOptions {
  /** Node's own metrics (event-loop lag, heap, GC, CPU, file descriptors): worth it only when scraped. */
  processMetrics?: boolean;
}

// Seconds. Polls and ingests range from a millisecond to minutes (a big initial sync).
const WORK_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
// Upstream requests include 30 s long polls and initial syncs of up to SYNCV3_HTTP_INITIAL_TIMEOUT_SECS.
const UPSTREAM_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 35, 60, 120, 300, 900, 1800];
/**
 * A sliding sync request is slow (sliding_sync_api_slow_requests, and a warning in the log) when
 * its answer goes out this long after it arrived: the Go proxy's rule, which times the whole
 * request, long-poll waiting included, so clients' usual 30 s long-polls stay well under it.
 */
export const SLOW_REQUEST_SECS = 50;
const LAG_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

export function createMetrics(opts: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  const registers = [registry];
  let sources: Partial<ScrapeSources> = {};

  const v2SyncThroughProxy = new Counter({
    name: 'syncv3_v2_sync_through_proxy_total',
    help: "Clients' own v2 /sync requests forwarded to the homeserver for a device the proxy polls (they take its to-device messages)",
    registers,
  });

  // The Go proxy's names (sync2/, sync3/, pubsub/).
  new Gauge({
    name: 'sliding_sync_poller_num_pollers',
    help: 'Number of active sync v2 pollers (one per polled device)',
    registers,
    collect() {
      this.set(sources.pollers?.() ?? 0);
    },
  });
  const polls = new Counter({ name: 'sliding_sync_poller_total_num_polls', help: 'Total number of sync v2 polls made', registers });
  const pollProcessDuration = new Histogram({
    name: 'sliding_sync_poller_process_duration_secs',
    help: 'Time taken to process a sync v2 response (store it and publish what changed), excluding the request itself',
    labelNames: ['initial', 'first'] as const,
    buckets: WORK_BUCKETS,
    registers,
  });
  const busPublished = new Counter({
    name: 'sliding_sync_poller_num_payloads',
    help: 'Number of bus messages published by the ingest side, by type',
    labelNames: ['payload_type'] as const,
    registers,
  });
  const busDelivered = new Counter({
    name: 'sliding_sync_api_num_payloads',
    help: 'Number of bus messages handled by subscribers on the serving side (once per subscriber), by type',
    labelNames: ['payload_type'] as const,
    registers,
  });
  new Gauge({
    name: 'sliding_sync_api_num_active_conns',
    help: 'Number of sliding sync connections held in memory',
    registers,
    collect() {
      this.set(sources.activeConnections?.() ?? 0);
    },
  });
  const apiSetupDuration = new Histogram({
    name: 'sliding_sync_api_setup_duration_secs',
    help: "Time taken to authenticate a sliding sync request and wait for the device's initial sync",
    labelNames: ['initial'] as const,
    buckets: WORK_BUCKETS,
    registers,
  });
  const apiProcessDuration = new Histogram({
    name: 'sliding_sync_api_process_duration_secs',
    help: 'Time taken to compute a sliding sync response, excluding long-poll waiting',
    labelNames: ['initial'] as const,
    buckets: WORK_BUCKETS,
    registers,
  });
  const connsExpiredIdle = new Counter({
    name: 'sliding_sync_api_expiry_conn_timed_out',
    help: 'Number of sliding sync connections expired for being unused too long',
    registers,
  });
  const connsDestroyed = new Counter({
    name: 'sliding_sync_api_destroyed_conns',
    help: 'Number of sliding sync connections destroyed (expired, evicted past the per-device cap, replaced, too far behind, token gone)',
    registers,
  });
  // The Go proxy's buckets, so queries made for its dashboards keep their meaning.
  const pollTimelineSize = new Histogram({
    name: 'sliding_sync_poller_timeline_size',
    help: 'Number of events seen by the poller in a sync v2 room timeline (joined and left rooms), by limited or unlimited',
    labelNames: ['limited'] as const,
    buckets: [0, 1, 2, 5, 10, 20, 50],
    registers,
  });
  const pollGappyStateSize = new Histogram({
    name: 'sliding_sync_poller_gappy_state_size',
    help: 'Number of events in a joined room state block of an incremental (gappy) sync v2 response',
    buckets: [1, 10, 100, 1000, 10000],
    registers,
  });
  const outstandingPolls = new Gauge({
    name: 'sliding_sync_poller_num_outstanding_sync_v2_reqs',
    help: 'Number of sync v2 requests that have yet to return a response',
    registers,
  });
  const devicesPendingEnsurePolling = new Gauge({
    name: 'sliding_sync_api_num_devices_pending_ensure_polling',
    help: "Number of devices whose sliding sync requests are waiting for the device's initial sync v2",
    registers,
  });
  const apiSlowRequests = new Counter({
    name: 'sliding_sync_api_slow_requests',
    help: `Sliding sync requests answered ${SLOW_REQUEST_SECS} s or more after they arrived (long-poll waiting included), initial or otherwise`,
    registers,
  });

  // Ours, in base units.
  const pollFailures = new Counter({
    name: 'syncv3_poller_failures_total',
    help: 'Failed sync v2 polls, by kind (server, network, timeout, rate_limited, bad_response, token, store, ...)',
    labelNames: ['kind'] as const,
    registers,
  });
  const skippedResponses = new Counter({
    name: 'syncv3_poller_skipped_responses_total',
    help: 'Unusable sync v2 responses skipped past after repeated failures; what they carried is lost, and the next events of each room are marked as following a gap',
    registers,
  });
  const busLag = new Histogram({
    name: 'syncv3_bus_lag_seconds',
    help: 'Time from an ingest commit until every bus subscriber has handled the messages it published',
    buckets: LAG_BUCKETS,
    registers,
  });
  const busRemoteLag = new Histogram({
    name: 'syncv3_bus_remote_lag_seconds',
    help: 'Time from another process sending bus messages (with its ingest commit) until they arrive here (SYNCV3_CLUSTER)',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });
  const ingestDuration = new Histogram({
    name: 'syncv3_ingest_duration_seconds',
    help: "Duration of the ingest transaction storing one sync v2 response (or several devices' repeats together)",
    buckets: WORK_BUCKETS,
    registers,
  });
  const upstreamDuration = new Histogram({
    name: 'syncv3_upstream_request_duration_seconds',
    help: 'Duration of requests to the homeserver (long polls included), by endpoint and HTTP status or network/timeout',
    labelNames: ['endpoint', 'status'] as const,
    buckets: UPSTREAM_BUCKETS,
    registers,
  });
  const upstreamErrors = new Counter({
    name: 'syncv3_upstream_errors_total',
    help: 'Failed requests to the homeserver, by endpoint, error kind and HTTP status (none without an answer)',
    labelNames: ['endpoint', 'kind', 'status'] as const,
    registers,
  });
  const historyFetches = new Counter({
    name: 'syncv3_history_fetches_total',
    help: "/messages requests for history before a room's stored timeline (timelines asked deeper than stored)",
    registers,
  });
  const historyEvents = new Counter({
    name: 'syncv3_history_events_total',
    help: 'Events history fetches placed in stored timelines',
    registers,
  });
  const historyFailures = new Counter({
    name: 'syncv3_history_fetch_failures_total',
    help: 'History fetches that stored nothing, by kind (upstream error kind, store, overlap, hidden: nothing the user may see)',
    labelNames: ['kind'] as const,
    registers,
  });
  const historyDuration = new Histogram({
    name: 'syncv3_history_fetch_duration_seconds',
    help: 'Duration of one history fetch: the /messages request and storing its events',
    buckets: WORK_BUCKETS,
    registers,
  });
  new Gauge({
    name: 'syncv3_cache_rooms',
    help: 'Rooms whose metadata is cached in memory',
    registers,
    collect() {
      this.set(sources.cachedRooms?.() ?? 0);
    },
  });
  new Gauge({
    name: 'syncv3_cache_users',
    help: 'Users whose room lists are cached in memory',
    registers,
    collect() {
      this.set(sources.cachedUsers?.() ?? 0);
    },
  });
  new Gauge({
    name: 'syncv3_to_device_backlog_messages',
    help: 'To-device messages stored and not yet acknowledged by their device',
    registers,
    async collect() {
      // A database that does not answer must not fail the whole scrape: keep the last value.
      const count = await sources.toDeviceBacklog?.().catch(() => undefined);
      if (count !== undefined) this.set(count);
    },
  });
  const pool = () => sources.dbPool?.() ?? { total: 0, idle: 0, waiting: 0 };
  new Gauge({
    name: 'syncv3_db_pool_connections',
    help: 'PostgreSQL connections open in the pool, by state (idle or in use)',
    labelNames: ['state'] as const,
    registers,
    collect() {
      const p = pool();
      this.set({ state: 'idle' }, p.idle);
      this.set({ state: 'in_use' }, p.total - p.idle);
    },
  });
  new Gauge({
    name: 'syncv3_db_pool_waiting_clients',
    help: 'Queries waiting for a PostgreSQL connection from the pool',
    registers,
    collect() {
      this.set(pool().waiting);
    },
  });

  if (opts.processMetrics) collectDefaultMetrics({ register: registry });

  return {
    registry,
    v2SyncThroughProxy,
    polls,
    pollProcessDuration,
    pollFailures,
    skippedResponses,
    busPublished,
    busDelivered,
    busLag,
    busRemoteLag,
    ingestDuration,
    apiSetupDuration,
    apiProcessDuration,
    connsExpiredIdle,
    connsDestroyed,
    pollTimelineSize,
    pollGappyStateSize,
    outstandingPolls,
    devicesPendingEnsurePolling,
    apiSlowRequests,
    upstreamDuration,
    upstreamErrors,
    historyFetches,
    historyEvents,
    historyFailures,
    historyDuration,
    setSources(next) {
      sources = { ...sources, ...next };
    },
  };
}

/** Seconds since `start` (a performance.now() reading), for histograms. */
export function secondsSince(start: number): number {
  return (performance.now() - start) / 1000;
}
