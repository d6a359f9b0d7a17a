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
      return { userId: '@alice:fake', deviceId: 'PHONE' };
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
