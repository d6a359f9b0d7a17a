// required_state: [type, state_key] pairs with "*" wildcards, "$ME" (the requester) and
// "$LAZY" (members of the timeline's senders), compiled into a set-like form that unions
// across lists and subscriptions, tells whether a new config asks for more than an old one,
// and turns into a store selector.
import { createHash } from 'node:crypto';
import type { StateSelector } from '../store/room-reads.js';

export interface StateConfig {
  all: boolean;
  /** Types wanted with every key. */
  types: Set<string>;
  /** Keys wanted with every type. */
  keys: Set<string>;
  /** type -> keys */
  pairs: Map<string, Set<string>>;
  lazyMembers: boolean;
}

export const emptyStateConfig = (): StateConfig => ({
  all: false,
  types: new Set(),
  keys: new Set(),
  pairs: new Map(),
  lazyMembers: false,
});

export function compileRequiredState(entries: [string, string][], userId: string): StateConfig {
  const cfg = emptyStateConfig();
  for (const [type, rawKey] of entries) {
    const key = rawKey === '$ME' ? userId : rawKey;
    if (type === '*' && key === '*') cfg.all = true;
    else if (type === '*') cfg.keys.add(key);
    else if (key === '*') cfg.types.add(type);
    else if (type === 'm.room.member' && key === '$LAZY') cfg.lazyMembers = true;
    else {
      const keys = cfg.pairs.get(type) ?? new Set<string>();
      keys.add(key);
      cfg.pairs.set(type, keys);
    }
  }
  return cfg;
}

export function unionStateConfigs(a: StateConfig, b: StateConfig): StateConfig {
  const out: StateConfig = {
    all: a.all || b.all,
    types: new Set([...a.types, ...b.types]),
    keys: new Set([...a.keys, ...b.keys]),
    pairs: new Map(),
    lazyMembers: a.lazyMembers || b.lazyMembers,
  };
  for (const src of [a.pairs, b.pairs]) {
    for (const [t, ks] of src) out.pairs.set(t, new Set([...(out.pairs.get(t) ?? []), ...ks]));
  }
  return out;
}

export function wants(cfg: StateConfig, type: string, key: string): boolean {
  return cfg.all || cfg.types.has(type) || cfg.keys.has(key) || (cfg.pairs.get(type)?.has(key) ?? false);
}

/** True when `next` asks for state that `prev` did not (so it must be sent now). */
export function stateConfigGrew(prev: StateConfig, next: StateConfig): boolean {
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

export function isEmptyStateConfig(cfg: StateConfig): boolean {
  return !cfg.all && cfg.types.size === 0 && cfg.keys.size === 0 && cfg.pairs.size === 0;
}

/** Compact, order-independent serialisation for connection memory. */
export function serializeStateConfig(cfg: StateConfig): string[][] {
  const out: string[][] = [];
  if (cfg.all) out.push(['*', '*']);
  for (const t of cfg.types) out.push([t, '*']);
  for (const k of cfg.keys) out.push(['*', k]);
  for (const [t, ks] of cfg.pairs) for (const k of ks) out.push([t, k]);
  if (cfg.lazyMembers) out.push(['m.room.member', '$LAZY']);
  return out;
}

export function deserializeStateConfig(entries: string[][]): StateConfig {
  // Entries were stored with $ME already resolved, so no user id is needed here.
  return compileRequiredState(entries as [string, string][], '');
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
