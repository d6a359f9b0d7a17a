// The Node.js version check that main.ts runs before anything else.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { REQUIRED_NODE, unsupportedNode } from '../../src/node-version.js';

const root = new URL('../../', import.meta.url);

describe('the Node.js version check', () => {
  it('refuses versions older than 22.19, naming the one required', () => {
    for (const version of ['20.20.2', '22.18.0', '18.0.0']) {
      assert.match(
        unsupportedNode(version) ?? '',
        new RegExp(`Node\\.js 22\\.19\\.0 or newer is required; this is ${version.replaceAll('.', '\\.')}`),
      );
    }
    for (const version of ['22.19.0', '22.20.1', '24.22.3', '25.0.0']) assert.equal(unsupportedNode(version), undefined, version);
  });

  it('agrees with package.json "engines", which npm enforces (.npmrc engine-strict)', async () => {
    const pkg = JSON.parse(await readFile(new URL('package.json', root), 'utf8'));
    assert.equal(pkg.engines.node, `>=${REQUIRED_NODE.replace(/\.0$/, '')}`);
    assert.match(await readFile(new URL('.npmrc', root), 'utf8'), /^engine-strict=true$/m);
  });

  it('runs before any other module of main.ts', async () => {
    const main = await readFile(new URL('src/main.ts', root), 'utf8');
    assert.match(main, /^import '\.\/node-version\.js';\nimport /m);
    const imports = [...main.matchAll(/^import .*$/gm)].map((m) => m[0]);
    assert.equal(imports[0], "import './node-version.js';");
  });
});
