// The real homeserver behind the end-to-end tier: one Synapse per test file (a start costs about
// 3 s, a first-ever provision about a minute), from scripts/synapse.sh, or an already running one
// named by SYNCV3_E2E_SERVER.
//
// A machine that cannot run Synapse (not root, no network for the first provision, the script
// fails) SKIPS the e2e files with the reason, so `npm test` stays usable everywhere. CI sets
// SYNCV3_E2E_REQUIRED=1, and then the same condition FAILS the file with the reason instead.
import { spawn, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort } from './ports.js';

const SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../scripts/synapse.sh');
/** A first provision builds a Debian chroot; later starts take seconds. */
const START_TIMEOUT_MS = 15 * 60_000;

/** Where scripts/synapse.sh keeps the data of the Synapse on `port` (its documented layout). */
function dataDir(port: number): string {
  const cache = process.env.SYNCV3_E2E_CACHE || path.join(process.env.HOME || '/root', '.cache/syncv3-e2e');
  return path.join(cache, 'chroot', 'srv', `synapse-${port}`);
}

export type Homeserver = { url: string; skip?: undefined } | { url?: undefined; skip: string };

interface ScriptResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runScript(args: string[], timeoutMs: number): Promise<ScriptResult> {
  return new Promise((resolve) => {
    // The script starts Synapse with setsid and closes its streams, so 'close' comes when the
    // script itself is done, not when Synapse exits.
    const child = spawn('bash', [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: `${stderr}${err.message}` });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function answersVersions(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/_matrix/client/versions`, { signal: AbortSignal.timeout(5000) });
    return res.ok;
  } catch {
    return false;
  }
}

function lastLines(text: string, n: number): string {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .slice(-n)
    .join(' | ');
}

/**
 * The shared secret of scripts/synapse.sh's homeservers, for the admin registration API (the
 * script's documented default, or the same variable it reads).
 */
export const REGISTRATION_SECRET = process.env.SYNAPSE_REGISTRATION_SHARED_SECRET || 'syncv3-e2e-registration-secret';

export type StartedSynapse = { url: string; stop(): void; skip?: undefined } | { url?: undefined; skip: string };

/**
 * Starts a throwaway Synapse; resolves with its URL and how to stop it (stop() also removes its
 * data dir unless SYNCV3_E2E_KEEP_SYNAPSE=1), or with why it could not start. The caller stops it;
 * an interrupted process (SIGINT, SIGTERM) stops it itself.
 */
export async function startSynapse(): Promise<StartedSynapse> {
  if (process.getuid?.() !== 0) return { skip: 'scripts/synapse.sh needs root (debootstrap, chroot, mount)' };
  let failure = '';
  // Another process may grab the free port before Synapse binds it: try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const res = await runScript(['start', '--port', String(port), '--fresh'], START_TIMEOUT_MS);
    const url = res.stdout.trim().split('\n').at(-1) ?? '';
    if (res.code === 0 && /^http:\/\/127\.0\.0\.1:\d+$/.test(url)) {
      let stopped = false;
      const stop = () => {
        if (stopped) return;
        stopped = true;
        const result = spawnSync('bash', [SCRIPT, 'stop', '--port', String(port)], { stdio: 'ignore', timeout: 30_000 });
        // Each start leaves a data dir (database, logs; a few MB) in the cached chroot: remove it
        // unless asked to keep it for reading synapse.log.
        if (result.status === 0 && process.env.SYNCV3_E2E_KEEP_SYNAPSE !== '1') rmSync(dataDir(port), { recursive: true, force: true });
      };
      // A runner interrupted with Ctrl-C must not leave Synapse running (it was started with setsid).
      for (const signal of ['SIGINT', 'SIGTERM'] as const) {
        process.once(signal, () => {
          stop();
          process.exit(130);
        });
      }
      return { url, stop };
    }
    failure = `scripts/synapse.sh start exited ${res.code}: ${lastLines(res.stderr, 3) || '(no output)'}`;
    if (!/already in use/.test(res.stderr)) break;
  }
  return { skip: failure };
}

/** A throwaway Synapse stopped after this test file's tests. */
async function startLocal(): Promise<Homeserver> {
  const started = await startSynapse();
  if (started.skip !== undefined) return { skip: started.skip };
  after(() => {
    started.stop();
  });
  return { url: started.url };
}

let once: Promise<Homeserver> | undefined;

/**
 * This test file's Synapse (started on first call, stopped after the file's tests), or a skip
 * reason. Use as `describe(name, { skip: hs.skip }, …)`. With SYNCV3_E2E_REQUIRED=1 an
 * unavailable Synapse throws instead, which fails the file with the reason.
 */
export function homeserverForFile(): Promise<Homeserver> {
  once ??= (async () => {
    const external = process.env.SYNCV3_E2E_SERVER?.replace(/\/+$/, '');
    const hs: Homeserver = external
      ? (await answersVersions(external))
        ? { url: external }
        : { skip: `SYNCV3_E2E_SERVER=${external} does not answer /_matrix/client/versions` }
      : await startLocal();
    if (hs.skip !== undefined && process.env.SYNCV3_E2E_REQUIRED === '1') {
      throw new Error(`end-to-end tests are required (SYNCV3_E2E_REQUIRED=1) but Synapse is unavailable: ${hs.skip}`);
    }
    if (hs.skip !== undefined) console.warn(`# skipping end-to-end tests: ${hs.skip}`);
    return hs;
  })();
  return once;
}
