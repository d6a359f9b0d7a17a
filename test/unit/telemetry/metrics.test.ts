// The registry: the Go proxy's names are there, scrape-time gauges read their sources, and a
// source that fails does not fail the scrape.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMetrics } from '../../../src/telemetry/metrics.js';
import { tracesUrl } from '../../../src/telemetry/tracing.js';

describe('metrics', () => {
  it("registers the Go proxy's metric names and ours", async () => {
    const { registry } = createMetrics();
    const names = (await registry.getMetricsAsJSON()).map((m) => m.name);
    for (const name of [
      'sliding_sync_poller_num_pollers',
      'sliding_sync_poller_process_duration_secs',
      'sliding_sync_poller_total_num_polls',
      'sliding_sync_poller_num_payloads',
      'sliding_sync_api_num_payloads',
      'sliding_sync_api_num_active_conns',
      'sliding_sync_api_process_duration_secs',
      'sliding_sync_api_expiry_conn_timed_out',
      'sliding_sync_api_destroyed_conns',
      'sliding_sync_poller_timeline_size',
      'sliding_sync_poller_gappy_state_size',
      'sliding_sync_poller_num_outstanding_sync_v2_reqs',
      'sliding_sync_api_num_devices_pending_ensure_polling',
      'sliding_sync_api_slow_requests',
      'syncv3_upstream_request_duration_seconds',
      'syncv3_upstream_errors_total',
      'syncv3_ingest_duration_seconds',
      'syncv3_bus_lag_seconds',
      'syncv3_to_device_backlog_messages',
    ]) {
      assert.ok(names.includes(name), name);
    }
    assert.ok(!names.includes('nodejs_heap_size_used_bytes'), 'process metrics only when asked for');
  });

  it('reads scrape-time gauges from their sources and survives a failing one', async () => {
    const metrics = createMetrics();
    let backlog = 5;
    metrics.setSources({
      pollers: () => 3,
      toDeviceBacklog: async () => {
        if (backlog < 0) throw new Error('database down');
        return backlog;
      },
      dbPool: () => ({ total: 4, idle: 1, waiting: 2 }),
    });
    let text = await metrics.registry.metrics();
    assert.match(text, /^sliding_sync_poller_num_pollers 3$/m);
    assert.match(text, /^sliding_sync_api_num_active_conns 0$/m, 'a source left out reads 0');
    assert.match(text, /^syncv3_to_device_backlog_messages 5$/m);
    assert.match(text, /^syncv3_db_pool_connections\{state="in_use"\} 3$/m);
    assert.match(text, /^syncv3_db_pool_waiting_clients 2$/m);
    backlog = -1;
    text = await metrics.registry.metrics();
    assert.match(text, /^syncv3_to_device_backlog_messages 5$/m, 'the last value stays');
  });
});

describe('tracesUrl', () => {
  it('appends /v1/traces once', () => {
    assert.equal(tracesUrl('http://otel:4318'), 'http://otel:4318/v1/traces');
    assert.equal(tracesUrl('http://otel:4318/'), 'http://otel:4318/v1/traces');
    assert.equal(tracesUrl('https://otel.example/v1/traces'), 'https://otel.example/v1/traces');
  });
});
