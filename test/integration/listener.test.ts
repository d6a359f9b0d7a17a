// SYNCV3_BINDADDR as the Go proxy read it: a unix socket that a reverse proxy running as another
// user can connect to, and `:port` on every interface, IPv6 and IPv4 alike.
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { get } from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { startTestProxy } from '../support/proxy.js';

function statusOver(socketPath: string, urlPath: string): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    get({ socketPath, path: urlPath }, (res) => {
      res.resume();
      resolve(res.statusCode);
    }).on('error', reject);
  });
}

/** Whether this machine can listen on the IPv6 loopback at all. */
function hasIpv6(): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(0, '::1', () => server.close(() => resolve(true)));
  });
}

describe('the client API listener', () => {
  it('makes its unix socket writable for every user, as the Go proxy did', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'syncv3-sock-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const socket = path.join(dir, 'proxy.sock');
    await startTestProxy(t, { SYNCV3_BINDADDR: socket });
    const info = await stat(socket);
    assert.ok(info.isSocket());
    assert.equal(info.mode & 0o222, 0o222, `mode ${(info.mode & 0o777).toString(8)}: others may connect`);
    assert.equal(await statusOver(socket, '/health'), 200);
  });

  it('listens on IPv6 and IPv4 for ":port"', async (t) => {
    if (!(await hasIpv6())) return t.skip('no IPv6 on this machine');
    const proxy = await startTestProxy(t, { SYNCV3_BINDADDR: ':0' });
    const port = new URL(proxy.url).port;
    assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200, 'IPv4');
    assert.equal((await fetch(`http://[::1]:${port}/health`)).status, 200, 'IPv6');
  });
});
