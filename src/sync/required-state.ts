// required_state: [type, state_key] pairs with "*" wildcards, "$ME" (the requester) and
// "$LAZY" (members of the timeline's senders), compiled into a set-like form that unions
// across lists and subscriptions, tells whether a new config asks for more than an old one,
// and turns into a store selector. The newest MSC4186 text's object form
// (`{include, exclude, lazy_members}`) arrives here as the same pairs plus excluded pairs.
import { createHash } from 'node:crypto';
import type { StateSelector } from '../store/room-reads.js';

/** A set of (type, state_key) with wildcards. */
export interface StatePattern {
  all: boolean;
  /** Types wanted with every key. */
  types: Set<string>;
  /** Keys wanted with every type. */
  keys: Set<string>;
  /** type -> keys */
  pairs: Map<string, Set<string>>;
}

export interface StateConfig extends StatePattern {
  lazyMembers: boolean;
  /** Taken out of what the pattern includes; lazily loaded members are not subject to it. */
  exclude: StatePattern;
}

const emptyPattern = (): StatePattern => ({ all: false, types: new Set(), keys: new Set(), pairs: new Map() });

export const emptyStateConfig = (): StateConfig => ({ ...emptyPattern(), lazyMembers: false, exclude: emptyPattern() });

function addToPattern(p: StatePattern, type: string, key: string): void {
  if (type === '*' && key === '*') p.all = true;
  else if (type === '*') p.keys.add(key);
  else if (key === '*') p.types.add(type);
  else {
    const keys = p.pairs.get(type) ?? new Set<string>();
    keys.add(key);
    p.pairs.set(type, keys);
  }
}

export function compileRequiredState(entries: [string, string][], userId: string, excluded: [string, string][] = []): StateConfig {
  const cfg = emptyStateConfig();
  const resolve = (rawKey: string) => (rawKey === '$ME' ? userId : rawKey);
  for (const [type, rawKey] of entries) {
    if (type === 'm.room.member' && rawKey === '$LAZY') cfg.lazyMembers = true;
    else addToPattern(cfg, type, resolve(rawKey));
  }
  for (const [type, rawKey] of excluded) addToPattern(cfg.exclude, type, resolve(rawKey));
  return cfg;
}

function matches(p: StatePattern, type: string, key: string): boolean {
  return p.all || p.types.has(type) || p.keys.has(key) || (p.pairs.get(type)?.has(key) ?? false);
}

/** A pattern as (type, key) entries, "*" for a wildcard. */
function entriesOf(p: StatePattern): [string, string][] {
  const out: [string, string][] = [];
  if (p.all) out.push(['*', '*']);
  for (const t of p.types) out.push([t, '*']);
  for (const k of p.keys) out.push(['*', k]);
  for (const [t, ks] of p.pairs) for (const k of ks) out.push([t, k]);
  return out;
}

/** Whether `p` could match some state that the entry (wildcards "*") matches. */
function overlaps(p: StatePattern, [type, key]: [string, string]): boolean {
  if (p.all) return true;
  if (type === '*' && key === '*') return p.types.size > 0 || p.keys.size > 0 || p.pairs.size > 0;
  if (type === '*') return p.keys.has(key) || p.types.size > 0 || [...p.pairs.values()].some((ks) => ks.has(key));
  if (key === '*') return p.types.has(type) || p.keys.size > 0 || p.pairs.has(type);
  return matches(p, type, key);
}

const hasEntry = (p: StatePattern, [type, key]: [string, string]) =>
  type === '*' && key === '*'
    ? p.all
    : type === '*'
      ? p.keys.has(key)
      : key === '*'
        ? p.types.has(type)
        : (p.pairs.get(type)?.has(key) ?? false);

/**
 * Union of two configs. An exclusion of one side survives only where the other side wants
 * nothing it covers (excludes it too, or includes none of it): a union may send more than
 * either asked, never less.
 */
export function unionStateConfigs(a: StateConfig, b: StateConfig): StateConfig {
  const out: StateConfig = {
    all: a.all || b.all,
    types: new Set([...a.types, ...b.types]),
    keys: new Set([...a.keys, ...b.keys]),
    pairs: new Map(),
    lazyMembers: a.lazyMembers || b.lazyMembers,
    exclude: emptyPattern(),
  };
  for (const src of [a.pairs, b.pairs]) {
    for (const [t, ks] of src) out.pairs.set(t, new Set([...(out.pairs.get(t) ?? []), ...ks]));
  }
  for (const [self, other] of [
    [a, b],
    [b, a],
  ] as const) {
    for (const entry of entriesOf(self.exclude)) {
      if (hasEntry(other.exclude, entry) || !overlaps(other, entry)) addToPattern(out.exclude, ...entry);
    }
  }
  return out;
}

export function wants(cfg: StateConfig, type: string, key: string): boolean {
  return matches(cfg, type, key) && !matches(cfg.exclude, type, key);
}

/** Whether the config's exclusions name this state (lazily loaded members pass anyway). */
export function excludes(cfg: StateConfig, type: string, key: string): boolean {
  return matches(cfg.exclude, type, key);
}

/** True when `next` asks for state that `prev` did not (so it must be sent now). */
export function stateConfigGrew(prev: StateConfig, next: StateConfig): boolean {
  // What prev left out and next no longer does.
  for (const entry of entriesOf(prev.exclude)) if (!hasEntry(next.exclude, entry) && overlaps(next, entry)) return true;
  if (prev.all) return false;
  if (next.all) return true;
  for (const t of next.types) if (!prev.types.has(t)) return true;
  for (const k of next.keys) if (!prev.keys.has(k)) return true;
  for (const [t, ks] of next.pairs) for (const k of ks) if (!wants(prev, t, k)) return true;
  return next.lazyMembers && !prev.lazyMembers;
}

export function toSelector(cfg: StateConfig): StateSelector {
  const pairTypes: string[] = [];
  const pairKeys: string[] = [];
  for (const [t, ks] of cfg.pairs) {
    for (const k of ks) {
      pairTypes.push(t);
      pairKeys.push(k);
    }
  }
  return { all: cfg.all, types: [...cfg.types], keys: [...cfg.keys], pairTypes, pairKeys };
}

/** Marks an excluded (type, key) in connection memory: three entries where an included one has two. */
const EXCLUDED = '!';

/** Compact, order-independent serialisation for connection memory. */
export function serializeStateConfig(cfg: StateConfig): string[][] {
  const out: string[][] = entriesOf(cfg);
  if (cfg.lazyMembers) out.push(['m.room.member', '$LAZY']);
  for (const [t, k] of entriesOf(cfg.exclude)) out.push([EXCLUDED, t, k]);
  return out;
}

export function deserializeStateConfig(entries: string[][]): StateConfig {
  // Entries were stored with $ME already resolved, so no user id is needed here.
  const included = entries.filter((e) => e.length === 2) as [string, string][];
  const excluded = entries.filter((e) => e.length === 3 && e[0] === EXCLUDED).map((e) => [e[1], e[2]] as [string, string]);
  return compileRequiredState(included, '', excluded);
}

/** A short, order-independent key naming a config, so rooms can remember it by reference. */
export function stateConfigKey(cfg: StateConfig): string {
  const canonical = JSON.stringify(
    serializeStateConfig(cfg)
      .map((e) => e.join('\0'))
      .sort(),
  );
  return createHash('sha256').update(canonical).digest('base64url').slice(0, 16);
}
