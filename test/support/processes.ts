// Helpers for tests that run the proxy as a child process, as operators do.
import { readdir, readFile } from 'node:fs/promises';

/** Fetches `url` until something answers (the process is still starting), for at most `timeoutMs`. */
export async function waitFor(url: string, timeoutMs: number): Promise<Response> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fetch(url);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** PIDs of postgres servers whose data directory is `dir`. */
export async function postgresUsing(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('postgres') && cmd.includes(dir)) pids.push(Number(pid));
  }
  return pids;
}
