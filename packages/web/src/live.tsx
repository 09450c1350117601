import { createContext, useCallback, useContext, useEffect, useRef, useState, type ReactNode } from 'react';
import type { ApiClient } from './api/client.js';
import type { EventStream, StreamStatus } from './api/events.js';
import type { DroverEvent, Operation, Page, Session } from './api/types.js';
import { isActive, newerOperation } from './format.js';

/** Application-wide things: the API client, the event stream, the session and the activity list. */
export interface AppContextValue {
  api: ApiClient;
  stream: EventStream;
  session: Session;
  logout: () => Promise<void>;
  /** Follow an operation started from this tab in the activity panel (live progress, outcome). */
  track: (op: Operation, label: string) => void;
}

export const AppContext = createContext<AppContextValue | undefined>(undefined);

export function useApp(): AppContextValue {
  const value = useContext(AppContext);
  if (!value) throw new Error('useApp outside the application');
  return value;
}

/** Calls `handler` for every event from the manager while the component is mounted. */
export function useEvents(handler: (event: DroverEvent) => void): void {
  const { stream } = useApp();
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => stream.subscribe((event) => ref.current(event)), [stream]);
}

/** Calls `handler` when the event stream came back after an interruption. */
export function useResync(handler: () => void): void {
  const { stream } = useApp();
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => stream.onResync(() => ref.current()), [stream]);
}

export function useStreamStatus(): StreamStatus {
  const { stream } = useApp();
  const [status, setStatus] = useState(stream.status);
  useEffect(() => {
    setStatus(stream.status);
    return stream.onStatus(setStatus);
  }, [stream]);
  return status;
}

export interface AsyncState<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
  setData: (update: (previous: T | undefined) => T | undefined) => void;
}

/** Loads `load()` when `key` changes; `reload()` loads again, keeping the old data visible meanwhile. */
export function useAsync<T>(load: () => Promise<T>, key: string): AsyncState<T> {
  const [data, setDataState] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [loading, setLoading] = useState(true);
  const [generation, setGeneration] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  const lastKey = useRef(key);

  useEffect(() => {
    let cancelled = false;
    if (lastKey.current !== key) {
      lastKey.current = key;
      setDataState(undefined);
    }
    setLoading(true);
    loadRef.current().then(
      (value) => {
        if (cancelled) return;
        setDataState(value);
        setError(undefined);
        setLoading(false);
      },
      (cause: unknown) => {
        if (cancelled) return;
        setError(cause);
        setLoading(false);
      },
    );
    return () => {
      cancelled = true;
    };
  }, [key, generation]);

  const reload = useCallback(() => setGeneration((n) => n + 1), []);
  const setData = useCallback((update: (previous: T | undefined) => T | undefined) => setDataState(update), []);
  return { data, error, loading, reload, setData };
}

/** Calls `fn` at most once per `ms`, at the end of a burst. */
export function useDebounced(fn: () => void, ms: number): () => void {
  const ref = useRef(fn);
  ref.current = fn;
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  useEffect(() => () => clearTimeout(timer.current), []);
  return useCallback(() => {
    clearTimeout(timer.current);
    timer.current = setTimeout(() => ref.current(), ms);
  }, [ms]);
}

/**
 * One page of a list that stays current: an `updatedType` event replaces the
 * item in place when it is on the page and still belongs there; anything else
 * that may change the page (a new item, a deletion, an item leaving the
 * filter) reloads the page, debounced.
 */
export function useLivePage<T extends { id: string }>(options: {
  key: string;
  load: () => Promise<Page<T>>;
  updatedType: DroverEvent['type'];
  removedType?: DroverEvent['type'];
  /** Whether an item belongs on this page's filter. */
  matches?: (item: T) => boolean;
}): AsyncState<Page<T>> {
  const state = useAsync(options.load, options.key);
  const reloadSoon = useDebounced(state.reload, 250);
  const matchesRef = useRef(options.matches);
  matchesRef.current = options.matches;
  const dataRef = useRef(state.data);
  dataRef.current = state.data;

  useEvents((event) => {
    const page = dataRef.current;
    if (!page) return;
    if (event.type === options.updatedType) {
      const item = event.data as unknown as T;
      const index = page.items.findIndex((i) => i.id === item.id);
      const belongs = matchesRef.current ? matchesRef.current(item) : true;
      if (index >= 0 && belongs) {
        state.setData((previous) => previous && { ...previous, items: previous.items.map((i) => (i.id === item.id ? item : i)) });
      } else if (index >= 0 || belongs) {
        reloadSoon();
      }
    } else if (options.removedType && event.type === options.removedType) {
      if (page.items.some((i) => i.id === (event.data as { id: string }).id)) reloadSoon();
    }
  });
  useResync(state.reload);
  return state;
}

// ------------------------------------------------------------------ one operation, followed live

/**
 * Follows one operation (an import, a disk added from a dialog) through the
 * event stream. `follow(op)` starts with the 202's answer and reads it once
 * more, in case its events went by before the answer arrived.
 */
export function useOperation(): [Operation | undefined, (op: Operation | undefined) => void] {
  const { api } = useApp();
  const [op, setOp] = useState<Operation | undefined>(undefined);
  const followed = useRef<string | undefined>(undefined);
  useEvents((event) => {
    if (event.type === 'operation.updated' && event.data.id === followed.current) setOp((old) => newerOperation(old, event.data));
  });
  const follow = useCallback(
    (next: Operation | undefined) => {
      followed.current = next?.id;
      setOp(next);
      if (next && isActive(next)) {
        api.operation(next.id).then(
          (fresh) => {
            if (followed.current === fresh.id) setOp((old) => newerOperation(old, fresh));
          },
          () => undefined,
        );
      }
    },
    [api],
  );
  useResync(() => {
    if (followed.current) api.operation(followed.current).then((fresh) => followed.current === fresh.id && setOp((old) => newerOperation(old, fresh)), () => undefined);
  });
  return [op, follow];
}

// ------------------------------------------------------------------ activity (operations started here)

export interface Activity {
  op: Operation;
  label: string;
}

export function useActivity(stream: EventStream): { activities: Activity[]; track: (op: Operation, label: string) => void; dismiss: (id: string) => void } {
  const [activities, setActivities] = useState<Activity[]>([]);
  const timers = useRef(new Map<string, ReturnType<typeof setTimeout>>());
  const tracked = useRef(new Set<string>());

  const dismiss = useCallback((id: string) => {
    clearTimeout(timers.current.get(id));
    timers.current.delete(id);
    tracked.current.delete(id);
    setActivities((list) => list.filter((a) => a.op.id !== id));
  }, []);

  const settle = useCallback(
    (op: Operation) => {
      // Successes fade after a while; failures stay until dismissed.
      if (op.state === 'done' && tracked.current.has(op.id) && !timers.current.has(op.id)) timers.current.set(op.id, setTimeout(() => dismiss(op.id), 8000));
    },
    [dismiss],
  );

  const track = useCallback(
    (op: Operation, label: string) => {
      tracked.current.add(op.id);
      setActivities((list) => [{ op, label }, ...list.filter((a) => a.op.id !== op.id)].slice(0, 6));
      if (!isActive(op)) settle(op);
    },
    [settle],
  );

  useEffect(
    () =>
      stream.subscribe((event) => {
        if (event.type !== 'operation.updated') return;
        const op = event.data;
        if (!tracked.current.has(op.id)) return;
        setActivities((list) => (list.some((a) => a.op.id === op.id) ? list.map((a) => (a.op.id === op.id ? { ...a, op } : a)) : list));
        settle(op);
      }),
    [stream, settle],
  );

  useEffect(() => {
    const map = timers.current;
    return () => map.forEach((t) => clearTimeout(t));
  }, []);

  return { activities, track, dismiss };
}

export function AppProvider({ value, children }: { value: AppContextValue; children: ReactNode }) {
  return <AppContext.Provider value={value}>{children}</AppContext.Provider>;
}
