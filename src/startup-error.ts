// A startup failure that the operator fixes in one variable: main.ts prints it as one line,
// naming the variable, without a stack trace.
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Address, VariableName } from './config.js';

export class StartupError extends Error {
  override name = 'StartupError';

  constructor(
    readonly variable: VariableName,
    what: string,
    options?: { cause?: unknown },
  ) {
    super(`${variable}: ${what}`, options);
  }
}

const formatAddress = (address: Address) =>
  address.kind === 'unix' ? address.path : `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;

/** Why listening on `address` failed, in the operator's terms. */
function listenProblem(err: NodeJS.ErrnoException, address: Address): string {
  const where = formatAddress(address);
  // libuv reports a missing directory as EACCES.
  if (address.kind === 'unix' && !existsSync(path.dirname(path.resolve(address.path)))) {
    return `${where}: the directory for the socket does not exist`;
  }
  switch (err.code) {
    case 'EADDRINUSE':
      return address.kind === 'tcp'
        ? `${where}: the port is already in use by another process${address.port === 8008 ? " (8008 is also Synapse's default port)" : ''}; choose another host:port`
        : `${where}: a file that is not a socket is in the way`;
    case 'EACCES':
      return address.kind === 'tcp'
        ? `${where}: permission denied (ports below 1024 need privileges)`
        : `${where}: permission denied: the proxy cannot create a socket in that directory`;
    case 'EADDRNOTAVAIL':
      return `${where}: no network interface of this machine has that address`;
    case 'EAFNOSUPPORT':
      return `${where}: IPv6 is not available here; use 0.0.0.0:port`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `${where}: the host name does not resolve`;
    default:
      return `${where}: cannot listen (${err.code ?? err.message})`;
  }
}

/** Runs a listen, turning its failure into a StartupError that names the variable. */
export async function listening<T>(variable: VariableName, address: Address, listen: () => Promise<T>): Promise<T> {
  try {
    return await listen();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code !== 'string' || !/^E[A-Z]+$/.test(code)) throw err;
    throw new StartupError(variable, listenProblem(err as NodeJS.ErrnoException, address), { cause: err });
  }
}
