// The embedded database in a container: /data must be a volume that outlives the container.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ephemeralDataProblem } from '../../src/persistent-data.js';

const line = (root: string, mountpoint: string) => `1 2 0:1 ${root} ${mountpoint} rw,relatime - ext4 /dev/sda1 rw`;
const base = [line('/', '/'), line('/', '/proc'), line('/etc/hosts', '/etc/hosts')];

describe('ephemeralDataProblem', () => {
  it('accepts a named volume or a bind mount at /data, or above it', () => {
    assert.equal(
      ephemeralDataProblem('/data', [...base, line('/var/lib/docker/volumes/syncv3-data/_data', '/data')].join('\n')),
      undefined,
    );
    assert.equal(ephemeralDataProblem('/data/sub', [...base, line('/srv/syncv3', '/data')].join('\n')), undefined);
  });

  it("refuses the container's own filesystem", () => {
    assert.match(ephemeralDataProblem('/data', base.join('\n')) ?? '', /container's own filesystem/);
    assert.match(
      ephemeralDataProblem('/database', [...base, line('/x', '/data')].join('\n')) ?? '',
      /own filesystem/,
      '/data is not a prefix of /database',
    );
  });

  it('refuses an anonymous volume (what a VOLUME line gives a container run without -v)', () => {
    const anonymous = line(`/var/lib/docker/volumes/${'ab12'.repeat(16)}/_data`, '/data');
    assert.match(ephemeralDataProblem('/data', [...base, anonymous].join('\n')) ?? '', /anonymous volume/);
  });

  it('reads escaped mount points', () => {
    assert.equal(ephemeralDataProblem('/my data', [...base, line('/srv/x', '/my\\040data')].join('\n')), undefined);
  });
});
