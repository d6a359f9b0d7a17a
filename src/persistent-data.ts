// In a container, the embedded database and the generated secret must live on a volume: on the
// container's own filesystem (or an anonymous volume, a new one per `docker run`) they vanish
// with the container, and the next one silently starts empty with a new secret.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

/** Markers Docker and Podman leave in every container. */
export function inContainer(): boolean {
  return existsSync('/.dockerenv') || existsSync('/run/.containerenv');
}

const unescapeOctal = (field: string) =>
  field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));

/** Docker's and Podman's anonymous volumes are named by 64 hex digits. */
const ANONYMOUS_VOLUME = /\/volumes\/[0-9a-f]{64}\/_data$/;

/**
 * Why `dir` is not persistent according to /proc/self/mountinfo, or undefined when it is on a
 * mount of its own (a named volume or a bind mount).
 */
export function ephemeralDataProblem(dir: string, mountinfo: string): string | undefined {
  const target = path.resolve(dir);
  let best: { mountpoint: string; root: string } | undefined;
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    const [root, mountpoint] = [fields[3], fields[4]];
    if (root === undefined || mountpoint === undefined) continue;
    const point = unescapeOctal(mountpoint);
    const inside = point === '/' || target === point || target.startsWith(`${point}/`);
    if (inside && (!best || point.length >= best.mountpoint.length)) best = { mountpoint: point, root: unescapeOctal(root) };
  }
  if (!best || best.mountpoint === '/') return `${target} is on the container's own filesystem, not on a volume`;
  if (ANONYMOUS_VOLUME.test(best.root)) return `${target} is on an anonymous volume, which a new container does not get back`;
  return undefined;
}

/** The problem with running the embedded database in `dir` here, if any. */
export function checkPersistentData(dir: string): string | undefined {
  if (!inContainer()) return undefined;
  let mountinfo: string;
  try {
    mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined; // not Linux, or no /proc: nothing to judge by
  }
  return ephemeralDataProblem(dir, mountinfo);
}
