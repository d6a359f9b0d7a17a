// auth/ as issue 19's processes will use it: two authenticators over one database, each with
// its own memory, as two proxy processes would be. A token one of them stored is known to the
// other without asking the homeserver, and the device is polled by whichever serves it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Authenticator } from '../../src/auth/authenticator.js';
import type { DevicePolling } from '../../src/auth/device-polling.js';
import type { Pool } from '../../src/store/db.js';
import { createTokenCipher } from '../../src/store/token-cipher.js';
import type { Homeserver } from '../../src/upstream/homeserver-client.js';
import { createTestDatabase, testLogger } from '../support/db.js';

function oneProcess(pool: Pool) {
  const whoamis: string[] = [];
  const polled: string[] = [];
  const homeserver = {
    whoami: async (token: string) => {
      whoamis.push(token);
      // Tokens named dev-N are devices of their own.
      return { userId: '@alice:fake', deviceId: token.startsWith('dev-') ? token : 'PHONE' };
    },
  } as unknown as Homeserver;
  const pollers = {
    ensurePolling: (device: { userId: string; deviceId: string }) => polled.push(`${device.userId}/${device.deviceId}`),
  } as unknown as DevicePolling;
  const auth = new Authenticator({ pool, homeserver, cipher: createTokenCipher('shared-secret'), pollers, logger: testLogger });
  return { auth, whoamis, polled };
}

describe('auth across processes', () => {
  it('recognises a token another process stored, from the store, without a whoami', async (t) => {
    const { pool } = await createTestDatabase(t);
    const first = oneProcess(pool);
    const second = oneProcess(pool);
    assert.deepEqual(await first.auth.authenticate('tok'), { userId: '@alice:fake', deviceId: 'PHONE' });
    assert.deepEqual(first.whoamis, ['tok'], 'new to the first: asked of the homeserver once');
    assert.deepEqual(await second.auth.authenticate('tok'), { userId: '@alice:fake', deviceId: 'PHONE' });
    assert.deepEqual(second.whoamis, [], 'the second found it in the store');
    assert.deepEqual(second.polled, ['@alice:fake/PHONE'], 'and polls the device it serves');
    assert.deepEqual(await second.auth.known('tok'), { userId: '@alice:fake', deviceId: 'PHONE' });
    assert.equal(await second.auth.known('other'), undefined);
  });
});

describe('auth under a burst', () => {
  it('looks up tokens arriving together in shared statements, each answered with its own device, a deleted one refused', async (t) => {
    const { pool } = await createTestDatabase(t);
    const tokens = Array.from({ length: 60 }, (_, i) => `dev-${i}`);
    const { auth: storing } = oneProcess(pool);
    for (const token of tokens) await storing.authenticate(token);
    let lookups = 0;
    const counted = {
      query: (text: string, values?: unknown[]) => {
        if (/FROM tokens t JOIN devices/.test(text)) lookups++;
        return pool.query(text, values);
      },
    } as unknown as Pool;
    const { auth, whoamis } = oneProcess(counted);
    const devices = await Promise.all(tokens.map((token) => auth.authenticate(token)));
    assert.deepEqual(
      devices.map((d) => d.deviceId),
      tokens,
    );
    assert.deepEqual(whoamis, [], 'every token was found in the store');
    assert.ok(lookups <= 5, `60 tokens took ${lookups} lookups`);
    await pool.query(`DELETE FROM tokens WHERE user_id = '@alice:fake' AND device_id = 'dev-7'`);
    assert.equal(await auth.known('dev-7'), undefined, 'a token deleted (by another process) is not served from memory');
  });
});
