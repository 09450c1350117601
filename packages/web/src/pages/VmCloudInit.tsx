import { useId, useState } from 'react';
import { InputError } from '../api/client.js';
import type { Vm } from '../api/types.js';
import { CloudInitFields } from '../components/CloudInitFields.js';
import { cloudInitSeed, cloudInitSummary, emptyCloudInit, type CloudInitText } from '../media.js';
import { ErrorNote } from '../components/ui.js';
import { canDo } from '../format.js';
import { useApp } from '../live.js';

/**
 * The VM's cloud-init seed: whether it has one (the manager echoes sizes only,
 * the files may hold secrets), and a new seed or none while the VM is defined
 * or stopped, sent with If-Match. The host rebuilds the seed at the next start.
 */
export function VmCloudInit({ vm, disabled }: { vm: Vm; disabled: boolean }) {
  const { api } = useApp();
  const [text, setText] = useState<CloudInitText>(emptyCloudInit);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [saved, setSaved] = useState<string | undefined>(undefined);
  const id = useId();
  const editable = canDo('edit', vm.state) && !disabled;
  const summary = cloudInitSummary(vm.spec.cloudInit);

  const send = (cloudInit: ReturnType<typeof cloudInitSeed> | null, done: string) => {
    setBusy(true);
    setError(undefined);
    setSaved(undefined);
    api.editVm(vm.id, { cloudInit }, vm.rev).then(
      () => {
        setBusy(false);
        setSaved(done);
        if (cloudInit) setText(emptyCloudInit);
      },
      (cause: unknown) => {
        setBusy(false);
        setError(cause);
      },
    );
  };

  return (
    <section aria-labelledby="vm-cloud-init" className="panel">
      <h2 id="vm-cloud-init">Cloud-init</h2>
      <p data-testid="cloud-init-state">
        {summary ? (
          <>
            This VM has a cloud-init seed: {summary}. Its content is not shown back (it may hold secrets).
          </>
        ) : (
          'This VM has no cloud-init seed.'
        )}
      </p>
      <details className="form-section">
        <summary>{summary ? 'Replace or remove the seed' : 'Add a seed'}</summary>
        <form
          className="form-grid"
          onSubmit={(event) => {
            event.preventDefault();
            const seed = cloudInitSeed(text);
            if (!seed) {
              setError(new InputError('Type the user data (or meta data) of the new seed first'));
              return;
            }
            send(seed, 'Saved: the new seed is used from the next start.');
          }}
        >
          <p className="help">
            {editable
              ? 'A new seed replaces the whole seed (every file); the host builds it at the next start. Change the instance-id in the meta data to have the guest run its user data again.'
              : `The seed changes only while the VM is defined or stopped (it is ${vm.state}).`}
          </p>
          <CloudInitFields id={`${id}-ci`} value={text} onChange={setText} disabled={!editable} />
          <ErrorNote error={error} onDismiss={() => setError(undefined)} />
          {saved && (
            <p className="ok-text" role="status">
              {saved}
            </p>
          )}
          <div className="form-actions">
            {summary && (
              <button type="button" className="danger-outline" disabled={!editable || busy} onClick={() => send(null, 'Removed: the VM starts without a seed.')}>
                Remove the seed
              </button>
            )}
            <button type="submit" className="primary" disabled={!editable || busy}>
              {busy ? 'Saving…' : summary ? 'Replace the seed' : 'Save the seed'}
            </button>
          </div>
        </form>
      </details>
    </section>
  );
}
