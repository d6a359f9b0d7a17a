// `npm start`'s prestart: compile src/ into dist/ when dist/ is missing or older than a source
// file, so the README's quick start (`npm ci && … npm start`) works on a fresh clone and after a
// `git pull`. A copy without src/ (a packed release, the container image) is left alone.
// Plain JavaScript on purpose: it must run before anything is built, with nothing but node.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, utimesSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const stamp = path.join(root, 'dist', 'main.js');

/** The newest modification time under `dir` (files only). */
function newest(dir) {
  let latest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) latest = Math.max(latest, statSync(path.join(entry.parentPath, entry.name)).mtimeMs);
  }
  return latest;
}

if (existsSync(path.join(root, 'src'))) {
  const inputs = Math.max(
    newest(path.join(root, 'src')),
    ...['tsconfig.json', 'tsconfig.build.json', 'package.json'].map((f) => statSync(path.join(root, f)).mtimeMs),
  );
  const built = existsSync(stamp) ? statSync(stamp).mtimeMs : 0;
  // tsc leaves unchanged outputs alone, so main.js is touched below to mark the build as current.
  if (built < inputs) {
    process.stderr.write(existsSync(stamp) ? 'dist/ is older than src/: rebuilding\n' : 'dist/ is not built yet: building\n');
    const tscBin = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    if (!existsSync(tscBin)) {
      process.stderr.write('Cannot build: TypeScript is not installed. Run `npm ci` (dev dependencies included) first.\n');
      process.exit(1);
    }
    const tsc = spawnSync(process.execPath, [tscBin, '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
    if (tsc.status !== 0) {
      process.stderr.write('The build failed (see above).\n');
      process.exit(1);
    }
    const now = new Date();
    utimesSync(stamp, now, now);
  }
}
