// Imported first by main.ts: on an older Node.js the proxy would start and then fail deep inside
// a dependency (undici, on Node 20), so say what is needed before any other module runs.
// ESM evaluates imports in order, so nothing below main.ts's first import has run yet.
export const REQUIRED_NODE = '22.19.0';

/** Why `version` (e.g. process.versions.node) cannot run the proxy, or undefined when it can. */
export function unsupportedNode(version: string): string | undefined {
  const have = version.split('.').map(Number);
  const need = REQUIRED_NODE.split('.').map(Number);
  for (let i = 0; i < need.length; i++) {
    const [h, n] = [have[i] ?? 0, need[i] ?? 0];
    if (h > n) return undefined;
    if (h < n)
      return `Node.js ${REQUIRED_NODE} or newer is required; this is ${version}. Install Node.js 24 LTS (or run ". scripts/node-env.sh").`;
  }
  return undefined;
}

const problem = unsupportedNode(process.versions.node);
if (problem) {
  process.stderr.write(`${problem}\n`);
  process.exit(1);
}
