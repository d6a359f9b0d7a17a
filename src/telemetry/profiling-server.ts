// SYNCV3_PPROF: the Go proxy's pprof listener, for Node. Two endpoints, both through V8's own
// inspector protocol in-process (node:inspector), so nothing needs --inspect or a restart:
//
//   GET /debug/pprof/profile?seconds=N  a CPU profile of the next N seconds (default 30, at most
//                                       600), as a `.cpuprofile` (open it in Chrome DevTools'
//                                       Performance panel or VS Code)
//   GET /debug/pprof/heap               a heap snapshot, streamed as it is written (`.heapsnapshot`,
//                                       open it in Chrome DevTools' Memory panel)
//
// A heap snapshot holds every string in memory, access tokens included; the ones the proxy
// knows (`secrets()`: live pollers' tokens, SYNCV3_SECRET, ...) are overwritten with `*` as the
// snapshot streams out. Still: bind this listener to loopback and treat what it serves as
// sensitive. Taking a snapshot pauses the process for a while (seconds per GiB of heap).
import { createServer, type ServerResponse } from 'node:http';
import { Session } from 'node:inspector/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Address } from '../config.js';
import type { Logger } from './logger.js';
import { listenSide, type SideListener } from './side-listener.js';

export interface ProfilingOptions {
  /** Strings to overwrite in heap snapshots (shorter than 8 characters are ignored). */
  secrets?: () => Iterable<string | undefined>;
  maxSeconds?: number;
}

const MIN_SECRET_LENGTH = 8;

/**
 * Overwrites secrets (with as many `*`) in text that arrives in chunks, including a secret
 * split across two chunks: the last (longest secret - 1) characters are held back until the
 * next chunk. A snapshot is hundreds of MiB and a big proxy polls thousands of tokens, so this
 * is one pass with a rolling hash over the shortest secret's length (Rabin-Karp), not one
 * search per secret.
 */
export function createStreamRedactor(secrets: Iterable<string | undefined>) {
  const list = [...new Set([...secrets].filter((s): s is string => typeof s === 'string' && s.length >= MIN_SECRET_LENGTH))];
  if (list.length === 0) return { push: (chunk: string) => chunk, flush: () => '' };
  const window = Math.min(...list.map((s) => s.length));
  const keep = Math.max(...list.map((s) => s.length)) - 1;
  const BASE = 31;
  let topPower = 1; // BASE^(window-1) mod 2^32: the weight of the character leaving the window
  for (let i = 1; i < window; i++) topPower = Math.imul(topPower, BASE) >>> 0;
  const hashAt = (text: string, from: number) => {
    let h = 0;
    for (let i = from; i < from + window; i++) h = (Math.imul(h, BASE) + text.charCodeAt(i)) >>> 0;
    return h;
  };
  // Secrets by the hash of their first `window` characters, longest first; a bitmap rules out
  // most positions before the Map is asked.
  const byPrefix = new Map<number, string[]>();
  const maybe = new Uint8Array(1 << 20);
  for (const s of list.sort((a, b) => b.length - a.length)) {
    const h = hashAt(s, 0);
    byPrefix.set(h, [...(byPrefix.get(h) ?? []), s]);
    maybe[h & 0xfffff] = 1;
  }
  const redact = (text: string) => {
    if (text.length < window) return text;
    let out = '';
    let copied = 0;
    let h = hashAt(text, 0);
    for (let i = 0; ; i++) {
      if (i >= copied && maybe[h & 0xfffff] === 1) {
        const found = byPrefix.get(h)?.find((s) => text.startsWith(s, i));
        if (found) {
          out += text.slice(copied, i) + '*'.repeat(found.length);
          copied = i + found.length;
        }
      }
      if (i + window >= text.length) break;
      h = (Math.imul(h - Math.imul(text.charCodeAt(i), topPower), BASE) + text.charCodeAt(i + window)) >>> 0;
    }
    return copied === 0 ? text : out + text.slice(copied);
  };
  let carry = '';
  return {
    push(chunk: string): string {
      const text = redact(carry + chunk);
      const cut = Math.max(0, text.length - keep);
      carry = text.slice(cut);
      return text.slice(0, cut);
    },
    flush(): string {
      const rest = carry;
      carry = '';
      return rest;
    },
  };
}

function stamp(): string {
  return new Date().toISOString().replace(/[:.]/g, '-');
}

export async function startProfilingServer(address: Address, logger: Logger, opts: ProfilingOptions = {}): Promise<SideListener> {
  const maxSeconds = opts.maxSeconds ?? 600;
  // One at a time: two CPU profiles would share one V8 profiler, two snapshots would double the pause.
  let busy = false;

  async function cpuProfile(seconds: number, res: ServerResponse) {
    const session = new Session();
    session.connect();
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    try {
      await session.post('Profiler.enable');
      await session.post('Profiler.start');
      await sleep(seconds * 1000, undefined, { signal: gone.signal }).catch(() => undefined);
      const { profile } = await session.post('Profiler.stop');
      if (gone.signal.aborted) return;
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-disposition': `attachment; filename="syncv3-${stamp()}.cpuprofile"`,
      });
      res.end(JSON.stringify(profile));
    } finally {
      await session.post('Profiler.disable').catch(() => undefined);
      session.disconnect();
    }
  }

  async function heapSnapshot(res: ServerResponse) {
    const session = new Session();
    session.connect();
    const redactor = createStreamRedactor(opts.secrets?.() ?? []);
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-disposition': `attachment; filename="syncv3-${stamp()}.heapsnapshot"`,
    });
    session.on('HeapProfiler.addHeapSnapshotChunk', (message) => {
      const text = redactor.push(message.params.chunk);
      if (text) res.write(text);
    });
    try {
      await session.post('HeapProfiler.takeHeapSnapshot', { reportProgress: false });
      res.end(redactor.flush());
    } finally {
      session.disconnect();
    }
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://pprof');
    const answer = (status: number, text: string) => {
      if (!res.headersSent) res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(`${text}\n`);
    };
    if (req.method !== 'GET') return answer(405, 'GET only');
    let work: () => Promise<void>;
    if (url.pathname === '/debug/pprof/profile') {
      const raw = url.searchParams.get('seconds') ?? '30';
      const seconds = /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
      if (!(seconds >= 1 && seconds <= maxSeconds)) return answer(400, `seconds must be a whole number from 1 to ${maxSeconds}`);
      work = () => cpuProfile(seconds, res);
    } else if (url.pathname === '/debug/pprof/heap') {
      work = () => heapSnapshot(res);
    } else if (url.pathname === '/debug/pprof/' || url.pathname === '/debug/pprof') {
      return answer(
        200,
        'GET /debug/pprof/profile?seconds=30  CPU profile (.cpuprofile)\nGET /debug/pprof/heap  heap snapshot (.heapsnapshot)',
      );
    } else {
      return answer(404, 'not found; see /debug/pprof/');
    }
    if (busy) return answer(409, 'a profile or snapshot is already being taken');
    busy = true;
    logger.info({ path: url.pathname, seconds: url.searchParams.get('seconds') ?? undefined }, 'profiling');
    work()
      .catch((err: unknown) => {
        logger.warn({ err }, 'profiling failed');
        // Half a snapshot must not pass for a whole one: cut the connection instead.
        if (res.headersSent) res.destroy();
        else answer(500, 'profiling failed');
      })
      .finally(() => {
        busy = false;
      });
  });
  const listener = await listenSide(server, address);
  logger.info({ url: `${listener.url}/debug/pprof/` }, 'serving CPU profiles and heap snapshots');
  return listener;
}
