// Small hooks the screens share: a value polled for freshness, a server stream collected live, and
// a long action with its progress and error sentence.
import { useEffect, useState } from "preact/hooks";
import { sentence } from "./api";

/** Loads `load()` now and every `everyMs`; the error's sentence when it fails. */
export function usePolled<T>(load: () => Promise<T>, everyMs: number, deps: unknown[] = []): { value?: T; error?: string } {
  const [state, setState] = useState<{ value?: T; error?: string }>({});
  useEffect(() => {
    let live = true;
    const tick = () =>
      load().then(
        (value) => live && setState({ value }),
        (err) => live && setState((s) => ({ ...s, error: sentence(err) })),
      );
    void tick();
    const timer = setInterval(tick, everyMs);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, deps);
  return state;
}

/** The last `keep` messages of a server stream, newest first, reopened when it ends. */
export function useStream<T>(
  open: (signal: AbortSignal) => AsyncIterable<T>,
  keep = 50,
  deps: unknown[] = [],
): { items: T[]; error?: string } {
  const [items, setItems] = useState<T[]>([]);
  const [error, setError] = useState<string>();
  useEffect(() => {
    const abort = new AbortController();
    (async () => {
      try {
        for await (const item of open(abort.signal)) setItems((all) => [item, ...all].slice(0, keep));
      } catch (err) {
        if (!abort.signal.aborted) setError(sentence(err));
      }
    })();
    return () => abort.abort();
  }, deps);
  return error === undefined ? { items } : { items, error };
}

/** A long action: `busy` names it while it runs, `error` holds the server's sentence if it fails. */
export function useAction(): { busy?: string; error?: string; run: (what: string, work: () => Promise<unknown>) => Promise<void> } {
  const [busy, setBusy] = useState<string>();
  const [error, setError] = useState<string>();
  const run = async (what: string, work: () => Promise<unknown>) => {
    setBusy(what);
    setError(undefined);
    try {
      await work();
    } catch (err) {
      setError(sentence(err));
    } finally {
      setBusy(undefined);
    }
  };
  return { ...(busy !== undefined && { busy }), ...(error !== undefined && { error }), run };
}
