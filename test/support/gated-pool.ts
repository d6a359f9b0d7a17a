// A pool for cache race tests: while `hold()` is in force its queries run for real (so they
// read the database as it is then) but hand their results back only at `release()`.
import type { Pool } from '../../src/store/db.js';

export type GatedPool = ReturnType<typeof gatedPool>;

export function gatedPool(pool: Pool) {
  let gate: { open: Promise<void>; release: () => void; started: number; read: number; allRead: () => void } | undefined;
  let allRead: Promise<void> = Promise.resolve();
  const gated = {
    async query(...args: Parameters<Pool['query']>) {
      const g = gate;
      // biome-ignore lint/suspicious/noExplicitAny: pg's overloads do not survive a spread
      const result = await (pool.query as any)(...args);
      if (!g) return result;
      g.read++;
      if (g.read === g.started) g.allRead();
      await g.open;
      return result;
    },
  } as unknown as Pool;
  return {
    pool: gated,
    /** Holds the results of the next `queries` queries; resolves once they have all read. */
    hold(queries: number) {
      let release!: () => void;
      const open = new Promise<void>((r) => {
        release = r;
      });
      let markRead!: () => void;
      allRead = new Promise<void>((r) => {
        markRead = r;
      });
      gate = { open, release, started: queries, read: 0, allRead: markRead };
      const g = gate;
      return {
        read: () => allRead,
        /** Stops holding new queries (the held ones stay held until release). */
        stopHolding: () => {
          if (gate === g) gate = undefined;
        },
        release: () => g.release(),
      };
    },
  };
}
