// The /client/ page is served from web/ next to dist/: the container image and the npm package
// must carry it, or the proxy fails at start-up (clientPageRoutes needs web/index.html).
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';

const root = new URL('../../../', import.meta.url);

describe('the /client/ page ships', () => {
  it("in the container image's runtime stage, beside dist/", async () => {
    const dockerfile = await readFile(new URL('Dockerfile', root), 'utf8');
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    assert.match(runtime, /^COPY web \.\/web$/m);
    assert.match(runtime, /^COPY --from=build \/app\/dist \.\/dist$/m);
  });

  it('in the npm package', async () => {
    const pkg = JSON.parse(await readFile(new URL('package.json', root), 'utf8')) as { files: string[] };
    assert.ok(pkg.files.includes('web/'));
  });
});
