// Heap snapshots stream out in chunks; a secret must be overwritten even when a chunk boundary
// cuts it in two, and nothing else may change.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createStreamRedactor } from '../../../src/telemetry/profiling-server.js';

function run(secrets: (string | undefined)[], chunks: string[]): string {
  const r = createStreamRedactor(secrets);
  return chunks.map((c) => r.push(c)).join('') + r.flush();
}

describe('createStreamRedactor', () => {
  it('overwrites secrets split across chunks with as many stars', () => {
    const out = run(['tok-SECRET-123'], ['{"strings":["Bearer tok-SEC', 'RET-123","x","tok-SECRET-123"]}']);
    assert.equal(out, '{"strings":["Bearer **************","x","**************"]}');
  });

  it('ignores short and missing secrets, and passes text through untouched without secrets', () => {
    assert.equal(run(['pw', undefined], ['a pw b']), 'a pw b');
    assert.equal(run([], ['abc', 'def']), 'abcdef');
  });

  it('equals a one-shot replacement whatever the chunking', () => {
    const secret = 'syt_secret_value';
    fc.assert(
      fc.property(fc.array(fc.constantFrom('a', '"', secret, 'syt_', 'secret', '_value'), { maxLength: 30 }), fc.nat(), (parts, seed) => {
        const text = parts.join('');
        const chunks: string[] = [];
        let i = 0;
        let s = seed;
        while (i < text.length) {
          const n = 1 + (s % 7);
          s = Math.floor(s / 7) + n * 31;
          chunks.push(text.slice(i, i + n));
          i += n;
        }
        assert.equal(run([secret], chunks), text.split(secret).join('*'.repeat(secret.length)));
      }),
    );
  });
});

describe('createStreamRedactor with many secrets', () => {
  it('overwrites every one of thousands of secrets of different lengths, sharing prefixes', () => {
    const secrets = Array.from({ length: 3000 }, (_, i) => `syt_${'x'.repeat(i % 5)}${i.toString(36)}_tail${i % 7}`);
    const text = secrets.map((s, i) => `"${i % 2 ? `Bearer ${s}` : s}"`).join(',');
    const out = run(secrets, [text.slice(0, 1000), text.slice(1000, 1001), text.slice(1001)]);
    assert.equal(out.length, text.length);
    for (const s of secrets) assert.ok(!out.includes(s), s);
    assert.equal(out.replace(/\*/g, '').length, text.length - secrets.reduce((n, s) => n + s.length, 0));
  });
});
