// What leaves for Sentry: tokens in headers, query strings, free text and token-named fields
// are gone, and the rest of the event is intact.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { scrubEvent, scrubString } from '../../../src/telemetry/error-reporting.js';

describe('scrubEvent', () => {
  it('drops Authorization and cookie headers and access_token query parameters', () => {
    const event = scrubEvent({
      request: {
        url: 'https://proxy.example/_matrix/client/v3/sync?since=s1&access_token=opaque-token-1&timeout=0',
        query_string: 'since=s1&access_token=opaque-token-1',
        headers: { Authorization: 'Bearer opaque-token-1', 'user-agent': 'Element', cookie: 'a=b' },
        cookies: { a: 'b' },
      },
    });
    assert.deepEqual(event.request.headers, { 'user-agent': 'Element' });
    assert.equal(event.request.cookies, undefined);
    assert.equal(event.request.url, 'https://proxy.example/_matrix/client/v3/sync?since=s1&access_token=[redacted]&timeout=0');
    assert.equal(event.request.query_string, 'since=s1&access_token=[redacted]');
  });

  it('redacts token-shaped text anywhere, and token-named fields', () => {
    const event = scrubEvent({
      message: 'upstream said no to Bearer opaque-token-2',
      exception: { values: [{ type: 'Error', value: 'token syt_YWxpY2U_abcdefghijKLMNOP_0a1b2c is dead' }] },
      breadcrumbs: [{ message: 'refresh with syr_Zm9vYmFy_qwertyuiop_123456' }],
      extra: { accessToken: 'opaque-token-3', nested: { refresh_token: 'opaque-token-4', since: 's72594_4483_1934' }, count: 3 },
      user: { id: '@alice:example.org' },
      tags: { device_id: 'ADEV' },
    });
    const text = JSON.stringify(event);
    for (const secret of ['opaque-token-2', 'syt_YWxpY2U', 'syr_Zm9vYmFy', 'opaque-token-3', 'opaque-token-4'])
      assert.ok(!text.includes(secret), secret);
    assert.equal(event.extra.nested.since, 's72594_4483_1934', 'sync positions are not secrets');
    assert.equal(event.extra.count, 3);
    assert.deepEqual(event.user, { id: '@alice:example.org' });
    assert.deepEqual(event.tags, { device_id: 'ADEV' });
  });

  it('copes with cycles', () => {
    const a: Record<string, unknown> = { note: 'Bearer xyz' };
    a.self = a;
    scrubEvent(a);
    assert.equal(a.note, 'Bearer [redacted]');
  });

  it('leaves ordinary text alone', () => {
    const text = 'M_UNKNOWN_POS: Unknown position 42 for @alice:example.org in !room:example.org';
    assert.equal(scrubString(text), text);
  });
});
