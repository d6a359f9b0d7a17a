// The homeserver's `unstable_features` that must not be passed on through the proxy.
//
// A client reads /versions at its base URL, which the proxy answers, and turns on whatever
// the flags promise. Most flags concern endpoints the proxy forwards unchanged, so they stay
// true. These few promise data inside the sliding sync response, which the proxy builds from
// v2 /sync and does not carry; advertised, they make clients wait for something that never
// comes, or worse (rust-sdk, seeing msc4306, asks the homeserver's thread-subscriptions
// endpoint with the proxy's `pos` as `to` and gets 400). Remove an entry when the proxy serves it.

/** MSC numbers whose feature lives in the sliding sync response; why, per entry, in README. */
const UNSERVED_FEATURE_PREFIXES: readonly string[] = [
  // Thread subscriptions: the `io.element.msc4308.thread_subscriptions` extension.
  'org.matrix.msc4306',
  // Sticky events: the `org.matrix.msc4354.sticky_events` extension.
  'org.matrix.msc4354',
  // Profile updates: the `org.matrix.msc4262.profiles` extension.
  'org.matrix.msc4262',
];

/** Whether `flag` names (or is a sub-flag, `<msc>.<part>`, of) a feature the proxy does not serve. */
function isUnservedFeature(flag: string): boolean {
  return UNSERVED_FEATURE_PREFIXES.some((msc) => flag === msc || flag.startsWith(`${msc}.`));
}

/** The homeserver's flags with the unserved ones left out. */
export function servedFeatures(features: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(features).filter(([flag]) => !isUnservedFeature(flag)));
}
