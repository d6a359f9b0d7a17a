// The README's quick start, run as written on a fresh copy of the repository: the tracked files
// only (no dist/), so `npm start` has to build before it starts. `npm ci` is the one step not
// repeated: the copy gets this checkout's node_modules, which `npm ci` made from the same lockfile.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { chmod, cp, mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { freePort } from '../support/ports.js';
import { postgresUsing, waitFor } from '../support/processes.js';

const ROOT = path.resolve('.');

/** The first shell block of the README's "Quick start" section. */
async function quickStartCommand(): Promise<string> {
  const readme = await readFile(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Quick start'));
  const block = /```sh\n([^`]+)```/.exec(section)?.[1]?.trim();
  assert.ok(block, 'the Quick start section has a sh block');
  return block;
}

async function freshCopy(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-clone-'));
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' })
    .split('\0')
    .filter(Boolean);
  for (const file of files) {
    await mkdir(path.join(dir, path.dirname(file)), { recursive: true });
    // A tracked file deleted in the worktree is simply not part of the copy.
    await cp(path.join(ROOT, file), path.join(dir, file)).catch((err) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
  await symlink(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  // As root the embedded PostgreSQL runs as `postgres`, which must reach ./data inside the copy.
  await chmod(dir, 0o755);
  return dir;
}

describe("the README's quick start", () => {
  it('builds, starts on a fresh clone and stops cleanly', async (t) => {
    const command = await quickStartCommand();
    const [install, start] = command.split(' && ');
    assert.equal(install, 'npm ci', command);
    const [, server] = /^SYNCV3_SERVER=(\S+) npm start$/.exec(start ?? '') ?? [];
    assert.ok(server, command);

    const dir = await freshCopy();
    t.after(async () => {
      for (const pid of await postgresUsing(dir)) process.kill(pid, 'SIGQUIT');
      await rm(dir, { recursive: true, force: true });
    });
    const port = await freePort();
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SYNCV3_') && !k.startsWith('npm_')));
    // Only where it listens differs from the defaults, so that tests and a Synapse may share the machine.
    const env = { ...clean, SYNCV3_SERVER: server, SYNCV3_BINDADDR: `127.0.0.1:${port}` };
    const child = spawn('npm', ['start'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      out += d;
    });
    const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    t.after(() => child.kill('SIGKILL'));

    const ready = await Promise.race([waitFor(`http://127.0.0.1:${port}/ready`, 120_000), exit]);
    assert.ok(ready instanceof Response, `npm start exited (${ready}) before the proxy was ready:\n${out}`);
    assert.equal(ready.status, 200, out);
    assert.match(out, /dist\/ is not built yet: building/);
    child.kill('SIGTERM');
    assert.equal(await exit, 0, out);
    assert.deepEqual(await postgresUsing(dir), [], `the embedded PostgreSQL stopped\n${out}`);
  });
});
