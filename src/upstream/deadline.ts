// The signal one upstream request runs under: aborted when its time budget is spent or when the
// caller's own signal aborts, and released as soon as the request is over.
//
// Not AbortSignal.any([signal, AbortSignal.timeout(ms)]): Node keeps such a pair strongly
// reachable (its internal set of signals that must not be collected) until the timeout fires,
// even after the request ended. With the default budget of 300 s, every whoami of a refreshed
// token and every poll held about 1 KiB for five minutes, so memory grew with the rate of
// token refreshes and polls instead of with what is in flight.

export interface Deadline {
  readonly signal: AbortSignal;
  /** The budget ran out (as opposed to the caller aborting). */
  readonly timedOut: boolean;
  /** The request is over: drops the timer and the listener on the caller's signal. Idempotent. */
  release(): void;
}

export function startDeadline(timeoutMs: number, callerSignal?: AbortSignal): Deadline {
  const abort = new AbortController();
  let timedOut = false;
  const onCallerAbort = () => abort.abort(callerSignal?.reason);
  const timer = setTimeout(() => {
    // Already aborted by the caller: that is why the request ended, not the budget.
    if (abort.signal.aborted) return;
    timedOut = true;
    abort.abort(new DOMException(`no answer within ${timeoutMs} ms`, 'TimeoutError'));
  }, timeoutMs);
  // Like AbortSignal.timeout: the budget alone does not keep the process running.
  timer.unref();
  if (callerSignal?.aborted) abort.abort(callerSignal.reason);
  else callerSignal?.addEventListener('abort', onCallerAbort, { once: true });
  return {
    signal: abort.signal,
    get timedOut() {
      return timedOut;
    },
    release() {
      clearTimeout(timer);
      callerSignal?.removeEventListener('abort', onCallerAbort);
    },
  };
}
