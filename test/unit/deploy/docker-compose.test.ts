// docker-compose.yml is where many operators start: its comments must send clients to the proxy
// (which forwards everything else), and every SYNCV3_* variable it sets or suggests must exist.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { VARIABLES } from '../../../src/config.js';

const compose = await readFile(new URL('../../../docker-compose.yml', import.meta.url), 'utf8');
const header = compose.slice(0, compose.indexOf('services:'));

describe('docker-compose.yml', () => {
  it("tells clients to use the proxy's URL as their homeserver, not Synapse's plus a proxy URL", () => {
    assert.match(header, /proxy's URL, http:\/\/localhost:8009, as their homeserver base URL/);
    assert.match(header, /forwards every other Client-Server API request/);
    assert.doesNotMatch(header, /use http:\/\/localhost:8008 for everything/);
  });

  it('suggests the operator listeners, commented out, and names only variables the proxy knows', () => {
    assert.match(compose, /^\s*# SYNCV3_PROM: 0\.0\.0\.0:2112/m);
    assert.match(compose, /^\s*# SYNCV3_PPROF: 0\.0\.0\.0:6060/m);
    for (const [name] of compose.matchAll(/\bSYNCV3_[A-Z0-9_]+/g)) assert.ok(name in VARIABLES, `${name} is not a SYNCV3_ variable`);
  });

  it('numbers its first steps in an order that works: the secret in .env before any compose command', () => {
    const steps = [...header.matchAll(/^#\s+(\d)\. (.+)$/gm)].map((m) => m[2] ?? '');
    const secret = steps.findIndex((step) => /SYNCV3_SECRET=.*> \.env/.test(step));
    const firstCompose = steps.findIndex((step) => step.startsWith('docker compose'));
    assert.ok(secret >= 0 && firstCompose >= 0, steps.join('\n'));
    assert.ok(secret < firstCompose, 'compose interpolates SYNCV3_SECRET for every command, `run` included');
  });

  it('publishes ports on loopback only', () => {
    const published = [...compose.matchAll(/^\s+- "([^"]+)"$/gm)].map((m) => m[1] ?? '').filter((p) => /^[\d.:]+$/.test(p));
    assert.ok(published.length >= 2, 'the proxy and Synapse are published');
    for (const port of published) assert.match(port, /^127\.0\.0\.1:/, port);
  });
});
