import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { shownError, type ShownError } from "./errors";

/** What a page shows of one source: its last data (kept through failures), the failure, whether it loads. */
export interface Loaded<T> {
  readonly data: T | undefined;
  readonly error: ShownError | undefined;
  readonly loading: boolean;
  /** Loads again now. */
  reload(): void;
}

/**
 * Loads one source of a page (a service's answer) and keeps it fresh: again every `refreshMs`
 * when given, and, after a failure, again every few seconds until it answers, so a service
 * that was down comes back on its own. A failure leaves the last data in place beside the
 * error; one source failing never touches the others.
 */
export function useLoad<T>(
  load: (signal: AbortSignal) => Promise<T>,
  deps: readonly unknown[],
  options: { service: { name: string; url: string }; refreshMs?: number; retryMs?: number },
): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: ShownError; loading: boolean }>({ loading: true });
  const [generation, setGeneration] = useState(0);
  const latest = useRef(load);
  latest.current = load;
  const reload = useCallback(() => setGeneration((g) => g + 1), []);

  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      setState((s) => ({ ...s, loading: true }));
      let failed = false;
      try {
        const data = await latest.current(controller.signal);
        if (controller.signal.aborted) return;
        setState({ data, loading: false });
      } catch (err) {
        if (controller.signal.aborted) return;
        failed = true;
        setState((s) => ({ data: s.data, error: shownError(err, options.service), loading: false }));
      }
      const next = failed ? (options.retryMs ?? 3000) : options.refreshMs;
      if (next !== undefined) timer = setTimeout(() => void run(), next);
    };
    void run();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
    // The caller names what the load depends on; `load` itself is read through a ref.
  }, [...deps, generation]);

  return { data: state.data, error: state.error, loading: state.loading, reload };
}

/** Runs one action of a form (a write), keeping its failure or its outcome to show. */
export function useAction(service: { name: string; url: string }) {
  const [state, setState] = useState<{ busy: boolean; error?: ShownError; done?: string }>({ busy: false });
  const run = useCallback(
    async (action: () => Promise<string | undefined>) => {
      setState({ busy: true });
      try {
        const done = await action();
        setState({ busy: false, done });
      } catch (err) {
        setState({ busy: false, error: shownError(err, service) });
      }
    },
    [service.name, service.url],
  );
  return { ...state, run, reset: () => setState({ busy: false }) };
}
