// What every sliding sync request is held to before its fields are read: how long it may
// wait, what its strings may hold, and how client-named maps are kept. Each limit here is
// one a hostile client reached, answering 500 or spinning a core.
import { z } from 'zod';
import { invalidParam } from '../matrix-error.js';

/**
 * The longest a request is held waiting for news, in ms. Synapse takes any `timeout`; Node's
 * timers do not (above 2^31−1 ms they fire after 1 ms, and the wait loop spins), and no client
 * asks for more than a minute. A longer wish is answered, empty, at this point instead, which
 * every client takes as a timeout like any other.
 */
export const SYNC_TIMEOUT_CAP_MS = 120_000;

/** A `timeout` in the body: a whole, non-negative number of ms, however large, held to the cap. */
export const bodyTimeout = z
  .number()
  .min(0)
  .refine(Number.isInteger, 'must be a whole number of milliseconds')
  .transform((ms) => Math.min(ms, SYNC_TIMEOUT_CAP_MS));

/** A `timeout` in the query string, the same as in the body. */
export const queryTimeout = z
  .string()
  .regex(/^\d+$/, 'must be a whole number of milliseconds')
  .transform((ms) => Math.min(Number(ms), SYNC_TIMEOUT_CAP_MS));

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * An object whose keys the client names (list names, room ids), read into a Map: keys such as
 * `__proto__`, `toString` or `constructor` are plain keys there, never Object.prototype's.
 */
export function dictionary<K extends z.ZodType<string, string>, V extends z.ZodType>(key: K, value: V) {
  return z.preprocess((v) => (isPlainObject(v) ? new Map(Object.entries(v)) : v), z.map(key, value, { error: 'must be an object' }));
}

/**
 * Refuses U+0000 anywhere in a parsed body or query, keys included: PostgreSQL cannot store it
 * in text or jsonb, so a request carrying one would fail half-way. Iterative, so that a deeply
 * nested body cannot exhaust the stack.
 */
export function refuseNul(root: unknown, rootName: string): void {
  const stack: [unknown, string][] = [[root, rootName]];
  while (stack.length) {
    const [value, path] = stack.pop() as [unknown, string];
    if (typeof value === 'string') {
      if (value.includes('\u0000')) throw invalidParam(path || 'body', 'must not contain U+0000');
    } else if (Array.isArray(value)) {
      value.forEach((v, i) => {
        stack.push([v, `${path}.${i}`]);
      });
    } else if (isPlainObject(value)) {
      for (const [k, v] of Object.entries(value)) {
        const at = path ? `${path}.${k}` : k;
        if (k.includes('\u0000')) throw invalidParam(path || 'body', 'keys must not contain U+0000');
        stack.push([v, at]);
      }
    }
  }
}
