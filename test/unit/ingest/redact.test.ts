import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { redactEvent, redactionTarget } from '../../../src/ingest/redact.js';

const redaction = { type: 'm.room.redaction', event_id: '$r', sender: '@a:x', content: { redacts: '$t' } };

describe('redaction', () => {
  it('keeps only the allowed content keys of a member event', () => {
    const member = {
      type: 'm.room.member',
      event_id: '$t',
      sender: '@a:x',
      state_key: '@a:x',
      origin_server_ts: 1,
      content: { membership: 'join', displayname: 'A', avatar_url: 'mxc://x/y', join_authorised_via_users_server: '@s:x' },
      unsigned: { age: 3 },
    };
    const out = redactEvent(member, '10', redaction);
    assert.deepEqual(out.content, { membership: 'join', join_authorised_via_users_server: '@s:x' });
    assert.deepEqual(out.unsigned, { redacted_because: redaction });
    assert.equal(out.state_key, '@a:x');
    const v1 = redactEvent(member, '1', redaction);
    assert.deepEqual(v1.content, { membership: 'join' }, 'join_authorised_via_users_server only from v9');
  });

  it('empties message content and keeps create content whole from v11', () => {
    const msg = { type: 'm.room.message', event_id: '$t', sender: '@a:x', content: { body: 'secret' }, origin_server_ts: 1 };
    assert.deepEqual(redactEvent(msg, '11', redaction).content, {});
    const create = {
      type: 'm.room.create',
      event_id: '$c',
      sender: '@a:x',
      content: { creator: '@a:x', type: 'm.space', room_version: '11' },
    };
    assert.deepEqual(redactEvent(create, '11', redaction).content, create.content);
    assert.deepEqual(redactEvent(create, '10', redaction).content, { creator: '@a:x' });
  });

  it('drops origin from v11 and keeps power level invite only from v11', () => {
    const pl = {
      type: 'm.room.power_levels',
      event_id: '$p',
      sender: '@a:x',
      origin: 'x',
      content: { invite: 50, ban: 50, notifications: { room: 50 } },
    };
    assert.deepEqual(redactEvent(pl, '11', redaction).content, { invite: 50, ban: 50 });
    assert.equal('origin' in redactEvent(pl, '11', redaction), false);
    assert.deepEqual(redactEvent(pl, '6', redaction).content, { ban: 50 });
    assert.equal(redactEvent(pl, '6', redaction).origin, 'x');
  });

  it('finds the target in content.redacts (v11) or top-level redacts', () => {
    assert.equal(redactionTarget(redaction), '$t');
    assert.equal(redactionTarget({ type: 'm.room.redaction', redacts: '$old', content: {} }), '$old');
    assert.equal(redactionTarget({ type: 'm.room.redaction', content: {} }), undefined);
  });
});
