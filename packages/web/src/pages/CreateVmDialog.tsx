import { useId, useState } from 'react';
import type { Vm, VmCreate } from '../api/types.js';
import { Dialog } from '../components/Dialog.js';
import { ErrorNote } from '../components/ui.js';
import { formatBytes, parseLabels } from '../format.js';
import { parseForwards } from '../filters.js';
import { useApp, useAsync } from '../live.js';

export function CreateVmDialog({ onClose, onCreated }: { onClose: () => void; onCreated: (vm: Vm) => void }) {
  const { api, track } = useApp();
  const images = useAsync(() => api.images({ limit: 1000 }), 'images');
  const [name, setName] = useState('');
  const [image, setImage] = useState('');
  const [cpus, setCpus] = useState('1');
  const [memory, setMemory] = useState('');
  const [labels, setLabels] = useState('');
  const [forwards, setForwards] = useState('');
  const [autostart, setAutostart] = useState(false);
  const [startNow, setStartNow] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const id = useId();

  const imageList = images.data?.items ?? [];
  const chosenImage = image || (imageList[0] ? imageList[0].name : '');

  const submit = async () => {
    const body: VmCreate = { name: name.trim(), image: chosenImage, cpus: Number(cpus) };
    if (memory.trim()) body.memoryMiB = Number(memory);
    const parsedLabels = parseLabels(labels);
    if (Object.keys(parsedLabels).length) body.labels = parsedLabels;
    const parsedForwards = parseForwards(forwards);
    if (parsedForwards.length) body.forwards = parsedForwards;
    if (autostart) body.autostart = true;
    const vm = await api.createVm(body);
    if (startNow) {
      try {
        track(await api.vmAction(vm.id, 'start'), `Start ${vm.name}`);
      } catch (cause) {
        // The VM exists: say so, and show why it did not start.
        onCreated(vm);
        throw cause;
      }
    }
    onCreated(vm);
    onClose();
  };

  return (
    <Dialog title="Create a VM" onClose={onClose}>
      <form
        className="form-grid"
        onSubmit={(event) => {
          event.preventDefault();
          setBusy(true);
          setError(undefined);
          submit().catch((cause: unknown) => {
            setBusy(false);
            setError(cause);
          });
        }}
      >
        <label htmlFor={`${id}-name`}>Name</label>
        <input id={`${id}-name`} required maxLength={63} pattern="[A-Za-z0-9][A-Za-z0-9_.\-]*" value={name} onChange={(e) => setName(e.target.value)} aria-describedby={`${id}-name-help`} autoComplete="off" />
        <p id={`${id}-name-help`} className="help">
          Letters, digits, “.”, “_” and “-”, starting with a letter or digit.
        </p>

        <label htmlFor={`${id}-image`}>Image</label>
        <select id={`${id}-image`} value={chosenImage} onChange={(e) => setImage(e.target.value)} required>
          {images.loading && imageList.length === 0 && <option value="">Loading images…</option>}
          {imageList.map((img) => (
            <option key={img.id} value={`${img.name}:${img.version}`} data-name={img.name}>
              {img.name} {img.version} ({formatBytes(img.sizeBytes)})
            </option>
          ))}
        </select>
        {images.error !== undefined && <ErrorNote error={images.error} />}

        <div className="form-row">
          <div>
            <label htmlFor={`${id}-cpus`}>vCPUs</label>
            <input id={`${id}-cpus`} type="number" min={1} max={64} required value={cpus} onChange={(e) => setCpus(e.target.value)} />
          </div>
          <div>
            <label htmlFor={`${id}-memory`}>Memory (MiB)</label>
            <input id={`${id}-memory`} type="number" min={64} max={1048576} placeholder="image default" value={memory} onChange={(e) => setMemory(e.target.value)} />
          </div>
        </div>

        <label htmlFor={`${id}-labels`}>Labels</label>
        <input id={`${id}-labels`} placeholder="tier=web, team=ops" value={labels} onChange={(e) => setLabels(e.target.value)} aria-describedby={`${id}-labels-help`} autoComplete="off" />
        <p id={`${id}-labels-help`} className="help">
          Optional, comma-separated key=value pairs.
        </p>

        <label htmlFor={`${id}-forwards`}>Port forwards</label>
        <input id={`${id}-forwards`} placeholder="8080:80" value={forwards} onChange={(e) => setForwards(e.target.value)} aria-describedby={`${id}-forwards-help`} autoComplete="off" />
        <p id={`${id}-forwards-help`} className="help">
          Optional host-port:guest-port pairs (TCP, on 127.0.0.1 of the VM's host).
        </p>

        <div className="checks">
          <label>
            <input type="checkbox" checked={autostart} onChange={(e) => setAutostart(e.target.checked)} /> Start again when its host comes back (autostart)
          </label>
          <label>
            <input type="checkbox" checked={startNow} onChange={(e) => setStartNow(e.target.checked)} /> Start it now
          </label>
        </div>

        <ErrorNote error={error} />
        <div className="form-actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy || !chosenImage}>
            {busy ? 'Creating…' : 'Create VM'}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
