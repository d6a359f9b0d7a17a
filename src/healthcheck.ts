// The container's HEALTHCHECK: `GET /ready` (the database answers and its schema is current)
// where SYNCV3_BINDADDR says the proxy listens, over HTTPS when SYNCV3_TLS_CERT is set.
// Exit 0 when ready, 1 otherwise, as Docker expects.
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { parseAddress } from './config.js';

const TIMEOUT_MS = 4000;

const bind = parseAddress(process.env.SYNCV3_BINDADDR?.trim() || '0.0.0.0:8008');
if (!bind) {
  process.stderr.write('SYNCV3_BINDADDR is neither host:port nor a unix socket path\n');
  process.exit(1);
}
const tls = Boolean(process.env.SYNCV3_TLS_CERT?.trim());
// A wildcard address is reached on loopback; the certificate is for the public name, so it is not checked.
const host = bind.kind === 'tcp' && !['0.0.0.0', '::', ''].includes(bind.host) ? bind.host : '127.0.0.1';
const target = bind.kind === 'unix' ? { socketPath: bind.path } : { host, port: bind.port };
const request = tls ? httpsRequest : httpRequest;
const req = request({ ...target, path: '/ready', method: 'GET', timeout: TIMEOUT_MS, rejectUnauthorized: false }, (res) => {
  res.resume();
  process.exit(res.statusCode === 200 ? 0 : 1);
});
req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
req.on('error', (err) => {
  process.stderr.write(`not ready: ${err.message}\n`);
  process.exit(1);
});
req.end();
