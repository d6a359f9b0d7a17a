// deploy/grafana-dashboard.json must only chart metrics the proxy really exports.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { createMetrics } from '../../../src/telemetry/metrics.js';

describe('the Grafana dashboard', () => {
  it('queries only metrics that exist', async () => {
    const dashboard = JSON.parse(await readFile(new URL('../../../deploy/grafana-dashboard.json', import.meta.url), 'utf8')) as {
      panels: { targets?: { expr: string }[] }[];
    };
    const exprs = dashboard.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr);
    assert.ok(exprs.length > 20);
    const { registry } = createMetrics({ processMetrics: true });
    const known = new Set((await registry.getMetricsAsJSON()).map((m) => m.name));
    const used = new Set(
      exprs.flatMap((e) => [...e.matchAll(/\b((?:sliding_sync|syncv3|nodejs|process)_\w+)/g)].map((m) => m[1] as string)),
    );
    for (const name of used) {
      const base = name.replace(/_(bucket|count|sum)$/, '');
      assert.ok(known.has(name) || known.has(base), `${name} is not exported`);
    }
  });
});
