// deploy/grafana-dashboard.json must chart every metric the proxy defines, and only metrics the
// proxy really exports.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { createMetrics } from '../../../src/telemetry/metrics.js';

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: { expr: string }[];
}

async function load() {
  const dashboard = JSON.parse(await readFile(new URL('../../../deploy/grafana-dashboard.json', import.meta.url), 'utf8')) as {
    panels: Panel[];
  };
  const exprs = dashboard.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr);
  // Histograms are queried by their series (_bucket, _count, _sum): count them as the metric.
  const used = new Set(exprs.flatMap((e) => [...e.matchAll(/\b((?:sliding_sync|syncv3|nodejs|process)_\w+)/g)].map((m) => m[1] as string)));
  return { panels: dashboard.panels, exprs, used };
}

const names = async (processMetrics: boolean) =>
  new Set((await createMetrics({ processMetrics }).registry.getMetricsAsJSON()).map((m) => m.name));

describe('the Grafana dashboard', () => {
  it('queries only metrics that exist', async () => {
    const { exprs, used } = await load();
    assert.ok(exprs.length > 20);
    const known = await names(true);
    for (const name of used) {
      const base = name.replace(/_(bucket|count|sum)$/, '');
      assert.ok(known.has(name) || known.has(base), `${name} is not exported`);
    }
  });

  it('charts every metric defined in src/telemetry/metrics.ts', async () => {
    const { used } = await load();
    const charted = new Set([...used].map((n) => n.replace(/_(bucket|count|sum)$/, '')));
    // Node's default process metrics are not ours to chart one by one.
    const missing = [...(await names(false))].filter((n) => !used.has(n) && !charted.has(n));
    assert.deepEqual(missing, [], `metrics without a panel: ${missing.join(', ')}`);
  });

  it('gives panels unique ids and a place of their own', async () => {
    const { panels } = await load();
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'duplicate panel id');
    for (const [i, a] of panels.entries()) {
      assert.ok(a.gridPos.x + a.gridPos.w <= 24, `${a.title} is wider than the grid`);
      for (const b of panels.slice(i + 1)) {
        const overlap =
          a.gridPos.x < b.gridPos.x + b.gridPos.w &&
          b.gridPos.x < a.gridPos.x + a.gridPos.w &&
          a.gridPos.y < b.gridPos.y + b.gridPos.h &&
          b.gridPos.y < a.gridPos.y + a.gridPos.h;
        assert.ok(!overlap, `${a.title} overlaps ${b.title}`);
      }
    }
  });

  it('declares only import inputs that it uses (the panels pick their source through the datasource variable)', async () => {
    const text = await readFile(new URL('../../../deploy/grafana-dashboard.json', import.meta.url), 'utf8');
    const inputs = (JSON.parse(text) as { __inputs?: { name: string }[] }).__inputs ?? [];
    for (const { name } of inputs) assert.ok(text.includes(`\${${name}}`), `${name} is declared and never used`);
  });
});
