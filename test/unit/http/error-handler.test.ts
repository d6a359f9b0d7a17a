// The error handler: Matrix errors keep their status and are not reported; anything else is a
// bland 500, reported with the method and path and, once the request was authenticated, the
// user and device it belongs to.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import Fastify from 'fastify';
import { errorHandler } from '../../../src/http/error-handler.js';
import { rememberDevice } from '../../../src/http/request-device.js';
import { MatrixError } from '../../../src/matrix-error.js';
import type { ErrorContext, ErrorReporter } from '../../../src/telemetry/error-reporting.js';

function recorder() {
  const captured: { err: unknown; context: ErrorContext | undefined }[] = [];
  const reporter: ErrorReporter = {
    enabled: true,
    capture: (err, context) => void captured.push({ err, context }),
    close: async () => {},
  };
  return { reporter, captured };
}

async function app(t: TestContext, reporter: ErrorReporter) {
  const server = Fastify();
  server.setErrorHandler(errorHandler(1024, reporter));
  server.post('/authed', async (request) => {
    rememberDevice(request, { userId: '@alice:x', deviceId: 'ADEV' });
    throw new Error('boom after auth');
  });
  server.post('/anonymous', async () => {
    throw new Error('boom before auth');
  });
  server.post('/matrix', async (request) => {
    rememberDevice(request, { userId: '@alice:x', deviceId: 'ADEV' });
    throw new MatrixError(400, 'M_BAD_JSON', 'no');
  });
  t.after(() => server.close());
  return server;
}

describe('errorHandler', () => {
  it('reports an unexpected error with the user and device the request was authenticated as', async (t) => {
    const { reporter, captured } = recorder();
    const server = await app(t, reporter);
    const res = await server.inject({ method: 'POST', url: '/authed?access_token=secret' });
    assert.equal(res.statusCode, 500);
    assert.deepEqual(res.json(), { errcode: 'M_UNKNOWN', error: 'Internal server error' });
    assert.equal(captured.length, 1);
    assert.equal((captured[0]?.err as Error | undefined)?.message, 'boom after auth');
    assert.deepEqual(captured[0]?.context, { user: '@alice:x', device: 'ADEV', tags: { method: 'POST', path: '/authed' } });
  });

  it('reports one before authentication without a user, and never a Matrix error', async (t) => {
    const { reporter, captured } = recorder();
    const server = await app(t, reporter);
    assert.equal((await server.inject({ method: 'POST', url: '/anonymous' })).statusCode, 500);
    assert.deepEqual(captured[0]?.context, { user: undefined, device: undefined, tags: { method: 'POST', path: '/anonymous' } });
    const matrix = await server.inject({ method: 'POST', url: '/matrix' });
    assert.equal(matrix.statusCode, 400);
    assert.equal(matrix.json().errcode, 'M_BAD_JSON');
    assert.equal(captured.length, 1, 'client mistakes are not reported');
  });
});
