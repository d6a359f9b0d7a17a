// Helpers shared by the benchmark scenarios: timing, percentiles and number formatting, the
// Element X room-list connection's shape, and throwaway databases.
import { performance } from 'node:perf_hooks';
import pg from 'pg';

export const ms = (t0: number) => performance.now() - t0;
export const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? 0;
export const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

/** The required_state of Element X's room-list connection. */
export const ELEMENT_X_REQUIRED_STATE: [string, string][] = [
  ['m.room.name', ''],
  ['m.room.encryption', ''],
  ['m.room.member', '$LAZY'],
  ['m.room.member', '$ME'],
  ['m.room.topic', ''],
  ['m.room.avatar', ''],
  ['m.room.canonical_alias', ''],
  ['m.room.power_levels', ''],
  ['org.matrix.msc3401.call.member', '*'],
  ['m.room.join_rules', ''],
  ['m.room.tombstone', ''],
  ['m.room.create', ''],
  ['m.room.history_visibility', ''],
  ['io.element.functional_members', ''],
  ['m.space.parent', '*'],
  ['m.space.child', '*'],
  ['org.matrix.msc3672.beacon_info', '*'],
];

/** Drops and creates database `name` on the server of `serverUrl`; returns its URL. */
export async function emptyDatabase(serverUrl: string, name: string): Promise<string> {
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return url.href;
}
