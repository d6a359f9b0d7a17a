// The Dockerfile, read without a Docker engine: what the final stage ships and how it is checked.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';

const root = new URL('../../../', import.meta.url);
const dockerfile = await readFile(new URL('Dockerfile', root), 'utf8');
const finalStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
const ignored = (await readFile(new URL('.dockerignore', root), 'utf8')).split('\n').filter(Boolean);

describe('Dockerfile', () => {
  it('health-checks with the shipped script, not a fixed address', () => {
    const check = /HEALTHCHECK[^\n]*\\\n\s*CMD (\[.*\])/.exec(finalStage)?.[1];
    assert.ok(check, 'a HEALTHCHECK with an exec-form CMD');
    assert.deepEqual(JSON.parse(check), ['node', 'dist/healthcheck.js']);
    assert.ok(existsSync(new URL('src/healthcheck.ts', root)), 'built into dist/healthcheck.js');
    assert.doesNotMatch(finalStage, /127\.0\.0\.1:8008|\/health'/);
  });

  it('declares no anonymous VOLUME, requires a persistent /data, and initialises the embedded database in UTF-8', () => {
    assert.doesNotMatch(finalStage, /^VOLUME/m);
    assert.match(finalStage, /SYNCV3_DATA_DIR=\/data \\\n\s+SYNCV3_REQUIRE_PERSISTENT_DATA=1\n/);
    assert.match(finalStage, /LANG=C\.UTF-8/);
  });

  it('copies only files the build context has, .env.example included (errors point to it)', () => {
    for (const [, source] of dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
      for (const file of (source ?? '').split(' ')) {
        assert.ok(existsSync(new URL(file, root)), `${file} exists`);
        assert.ok(!ignored.includes(file), `${file} is not in .dockerignore`);
      }
    }
    assert.match(finalStage, /^COPY \.env\.example /m);
  });

  it('leaves the Sentry CLI out of the production dependencies it ships', () => {
    assert.match(dockerfile, /npm prune --omit=dev[^\n]*&& rm -rf node_modules\/sentry$/m);
  });
});
