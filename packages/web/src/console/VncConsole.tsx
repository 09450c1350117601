import { useEffect, useRef, useState } from 'react';
import RFB from '@novnc/novnc';
import { errorMessage } from '../api/client.js';
import type { Vm } from '../api/types.js';
import { useApp } from '../live.js';
import { isReleaseKey, releaseKeyHint } from './keys.js';

type Status = { kind: 'connecting' } | { kind: 'open'; desktop?: string } | { kind: 'closed'; reason: string };

/**
 * The VM's screen in noVNC, over the manager's WebSocket relay to the agent's
 * VNC stream (binary RFB). The WebSocket carries a single-use ticket.
 */
export default function VncConsole({ vm }: { vm: Vm }) {
  const { api } = useApp();
  const screen = useRef<HTMLDivElement>(null);
  const toolbarButton = useRef<HTMLButtonElement>(null);
  const rfbRef = useRef<RFB | undefined>(undefined);
  const [status, setStatus] = useState<Status>({ kind: 'connecting' });
  const [generation, setGeneration] = useState(0);

  useEffect(() => {
    const element = screen.current!;
    let rfb: RFB | undefined;
    let disposed = false;
    // Capture phase: seen before noVNC's own key handler on the canvas.
    const onKeyDown = (event: KeyboardEvent) => {
      if (!isReleaseKey(event)) return;
      event.preventDefault();
      event.stopPropagation();
      toolbarButton.current?.focus();
    };
    element.addEventListener('keydown', onKeyDown, true);

    (async () => {
      setStatus({ kind: 'connecting' });
      const url = await api.socketUrl(`/vms/${encodeURIComponent(vm.id)}/console/vnc`);
      if (disposed) return;
      rfb = new RFB(element, url, { wsProtocols: [], shared: true });
      rfbRef.current = rfb;
      rfb.scaleViewport = true;
      rfb.resizeSession = false;
      rfb.focusOnClick = true;
      rfb.background = '#111';
      rfb.addEventListener('connect', () => !disposed && setStatus({ kind: 'open' }));
      rfb.addEventListener('desktopname', (event) => !disposed && setStatus({ kind: 'open', desktop: (event as CustomEvent<{ name: string }>).detail.name }));
      rfb.addEventListener('disconnect', (event) => {
        if (disposed) return;
        const clean = (event as CustomEvent<{ clean: boolean }>).detail.clean;
        setStatus({ kind: 'closed', reason: clean ? 'the connection was closed' : 'the connection was lost' });
      });
      rfb.addEventListener('securityfailure', (event) => {
        if (!disposed) setStatus({ kind: 'closed', reason: `security failure: ${(event as CustomEvent<{ reason?: string }>).detail.reason ?? 'refused'}` });
      });
    })().catch((error: unknown) => {
      if (!disposed) setStatus({ kind: 'closed', reason: errorMessage(error) });
    });

    return () => {
      disposed = true;
      element.removeEventListener('keydown', onKeyDown, true);
      try {
        rfb?.disconnect();
      } catch {
        /* already closed */
      }
      rfbRef.current = undefined;
    };
  }, [api, vm.id, generation]);

  const open = status.kind === 'open';
  return (
    <div className="console vnc-console">
      <div className="console-bar">
        <span role="status" className={`console-status console-${status.kind}`}>
          {status.kind === 'open' ? `Connected${status.desktop ? ` to ${status.desktop}` : ''}` : status.kind === 'connecting' ? 'Connecting…' : `Disconnected: ${status.reason}`}
        </span>
        <span className="muted small">{releaseKeyHint}</span>
        <button type="button" disabled={!open} onClick={() => rfbRef.current?.focus()}>
          Type into the screen
        </button>
        <button type="button" disabled={!open} onClick={() => rfbRef.current?.sendCtrlAltDel()}>
          Send Ctrl+Alt+Del
        </button>
        <button type="button" ref={toolbarButton} onClick={() => setGeneration((n) => n + 1)}>
          Reconnect
        </button>
      </div>
      <div className="vnc-screen" ref={screen} role="region" aria-label={`Screen of ${vm.name}`} data-testid="vnc-screen" />
    </div>
  );
}
