import { useEffect, useRef, useState } from 'react';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { ApiError, errorMessage } from '../api/client.js';
import type { Vm } from '../api/types.js';
import { useApp } from '../live.js';
import { isReleaseKey, releaseKeyHint } from './keys.js';

type Status = { kind: 'connecting' } | { kind: 'open' } | { kind: 'closed'; reason: string };

/**
 * The VM's serial port in xterm.js: first what it already printed (the serial
 * log, read through the manager), then the live stream over the manager's
 * WebSocket relay, raw bytes both ways. Keys typed here go to the guest.
 */
export default function SerialConsole({ vm }: { vm: Vm }) {
  const { api } = useApp();
  const holder = useRef<HTMLDivElement>(null);
  const after = useRef<HTMLButtonElement>(null);
  const [status, setStatus] = useState<Status>({ kind: 'connecting' });
  const [generation, setGeneration] = useState(0);

  useEffect(() => {
    const element = holder.current!;
    const term = new Terminal({ convertEol: true, scrollback: 5000, fontSize: 14, cursorBlink: true, fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace' });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(element);
    term.attachCustomKeyEventHandler((event) => {
      if (event.type === 'keydown' && isReleaseKey(event)) {
        after.current?.focus();
        return false;
      }
      return true;
    });
    const refit = () => {
      try {
        fit.fit();
      } catch {
        /* not visible */
      }
    };
    refit();
    const observer = new ResizeObserver(refit);
    observer.observe(element);

    let socket: WebSocket | undefined;
    let disposed = false;
    const encoder = new TextEncoder();
    const input = term.onData((data) => {
      if (socket?.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
    });

    (async () => {
      setStatus({ kind: 'connecting' });
      try {
        const log = await api.serialLog(vm.id);
        if (disposed) return;
        if (log.text) term.write(log.text);
      } catch (error) {
        if (disposed) return;
        // No history (e.g. a log over 8 MiB): the live stream still works.
        if (!(error instanceof ApiError && (error.status === 413 || error.status === 409))) term.write(`\r\n[serial log unavailable: ${errorMessage(error)}]\r\n`);
      }
      const url = await api.socketUrl(`/vms/${encodeURIComponent(vm.id)}/console/serial`);
      if (disposed) return;
      socket = new WebSocket(url);
      socket.binaryType = 'arraybuffer';
      socket.onopen = () => setStatus({ kind: 'open' });
      socket.onmessage = (message) => {
        if (message.data instanceof ArrayBuffer) term.write(new Uint8Array(message.data));
        else term.write(String(message.data));
      };
      socket.onclose = (event) => {
        if (!disposed) setStatus({ kind: 'closed', reason: event.reason || (event.code === 1000 ? 'closed' : `connection lost (code ${event.code})`) });
      };
    })().catch((error: unknown) => {
      if (!disposed) setStatus({ kind: 'closed', reason: errorMessage(error) });
    });

    return () => {
      disposed = true;
      input.dispose();
      observer.disconnect();
      socket?.close();
      term.dispose();
    };
  }, [api, vm.id, generation]);

  return (
    <div className="console serial-console">
      <div className="console-bar">
        <span role="status" className={`console-status console-${status.kind}`}>
          {status.kind === 'open' ? 'Connected' : status.kind === 'connecting' ? 'Connecting…' : `Disconnected: ${status.reason}`}
        </span>
        <span className="muted small">{releaseKeyHint}</span>
        <button type="button" ref={after} onClick={() => setGeneration((n) => n + 1)}>
          Reconnect
        </button>
      </div>
      <div className="terminal-holder" ref={holder} role="region" aria-label={`Serial console of ${vm.name}`} data-testid="serial-console" />
    </div>
  );
}
