import { useId, useState } from 'react';
import { InputError } from '../api/client.js';
import type { Vm, VmCreate } from '../api/types.js';
import { CloudInitFields } from '../components/CloudInitFields.js';
import { cloudInitSeed, emptyCloudInit, type CloudInitText } from '../media.js';
import { Dialog } from '../components/Dialog.js';
import { ErrorNote } from '../components/ui.js';
import { formatBytes, parseLabels, parseSize } from '../format.js';
import { parseForwards } from '../filters.js';
import { useApp, useAsync } from '../live.js';
import { Link } from '../router.js';

export function CreateVmDialog({ onClose, onCreated }: { onClose: () => void; onCreated: (vm: Vm) => void }) {
  const { api, track } = useApp();
  const images = useAsync(() => api.images({ limit: 1000 }), 'images');
  const [name, setName] = useState('');
  /** "name:version", "none" (boot the ISO only), or undefined: the first bootable image. */
  const [image, setImage] = useState<string | undefined>(undefined);
  const [iso, setIso] = useState('');
  const [diskSize, setDiskSize] = useState('');
  const [cloudInit, setCloudInit] = useState<CloudInitText>(emptyCloudInit);
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
  const appliances = imageList.filter((i) => i.format === 'appliance');
  const diskImages = imageList.filter((i) => i.format !== 'appliance' && i.format !== 'iso');
  const isos = imageList.filter((i) => i.format === 'iso');
  const firstBootable = appliances[0] ?? diskImages[0];
  const chosenImage = image ?? (firstBootable ? `${firstBootable.name}:${firstBootable.version}` : '');
  const chosen = imageList.find((i) => `${i.name}:${i.version}` === chosenImage);
  // Appliances bring their own disks; a disk image's clone may grow; without an image the disk is new and empty.
  const diskSizeApplies = chosenImage === 'none' || (chosen !== undefined && chosen.format !== 'appliance');
  const ready = chosenImage !== '' && (chosenImage !== 'none' || iso !== '');

  const submit = async () => {
    const body: VmCreate = { name: name.trim(), cpus: Number(cpus) };
    if (chosenImage !== 'none') body.image = chosenImage;
    else if (!iso) throw new InputError('Without an image the VM boots its ISO: choose one');
    if (iso) body.iso = iso;
    if (diskSizeApplies && diskSize.trim()) {
      const bytes = parseSize(diskSize);
      if (bytes === undefined || bytes < 1024 * 1024) throw new InputError(`Disk size "${diskSize}" is not a size such as 512M or 20G (at least 1M)`);
      body.diskSizeBytes = bytes;
    }
    const seed = cloudInitSeed(cloudInit);
    if (seed) body.cloudInit = seed;
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
        <select id={`${id}-image`} value={chosenImage} onChange={(e) => setImage(e.target.value)} required aria-describedby={`${id}-image-help`}>
          {images.loading && imageList.length === 0 && <option value="">Loading images…</option>}
          {appliances.length > 0 && (
            <optgroup label="Appliances">
              {appliances.map((img) => (
                <option key={img.id} value={`${img.name}:${img.version}`} data-name={img.name}>
                  {img.name} {img.version} ({formatBytes(img.sizeBytes)})
                </option>
              ))}
            </optgroup>
          )}
          {diskImages.length > 0 && (
            <optgroup label="Disk images">
              {diskImages.map((img) => (
                <option key={img.id} value={`${img.name}:${img.version}`} data-name={img.name}>
                  {img.name} {img.version} ({formatBytes(img.sizeBytes)})
                </option>
              ))}
            </optgroup>
          )}
          {isos.length > 0 && <option value="none">None: boot the ISO</option>}
        </select>
        <p id={`${id}-image-help`} className="help">
          An appliance boots its own kernel; a VM of a disk image boots a thin clone of it. Import more on the <Link to="/images">Images</Link> page.
        </p>
        {images.error !== undefined && <ErrorNote error={images.error} />}

        <label htmlFor={`${id}-iso`}>ISO (CD-ROM)</label>
        <select id={`${id}-iso`} value={iso} onChange={(e) => setIso(e.target.value)} aria-describedby={`${id}-iso-help`} required={chosenImage === 'none'}>
          <option value="">None</option>
          {isos.map((img) => (
            <option key={img.id} value={`${img.name}:${img.version}`}>
              {img.name} {img.version} ({formatBytes(img.sizeBytes)})
            </option>
          ))}
        </select>
        <p id={`${id}-iso-help`} className="help">
          {isos.length === 0 ? 'No ISO in the library yet.' : 'Attached read-only and booted first, before the disk (an appliance boots its kernel and only sees it).'}
        </p>

        <label htmlFor={`${id}-disk-size`}>Disk size</label>
        <input
          id={`${id}-disk-size`}
          value={diskSizeApplies ? diskSize : ''}
          disabled={!diskSizeApplies}
          placeholder={diskSizeApplies ? (chosenImage === 'none' ? 'no disk' : "the image's size") : 'set by the appliance'}
          onChange={(e) => setDiskSize(e.target.value)}
          aria-describedby={`${id}-disk-size-help`}
          autoComplete="off"
        />
        <p id={`${id}-disk-size-help`} className="help">
          {chosenImage === 'none'
            ? 'Optional: an empty disk of this size to install onto from the ISO, e.g. 20G.'
            : diskSizeApplies
              ? "Optional: the size of the VM's disk, at least the image's own, e.g. 20G."
              : 'Appliances bring their own disks.'}
        </p>

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

        <details className="form-section">
          <summary>Cloud-init</summary>
          <div className="form-grid">
            <p className="help">Optional: a NoCloud seed (an ISO labelled cidata) that the host builds and attaches read-only, for images that run cloud-init.</p>
            <CloudInitFields id={`${id}-ci`} value={cloudInit} onChange={setCloudInit} />
          </div>
        </details>

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
          <button type="submit" className="primary" disabled={busy || !ready}>
            {busy ? 'Creating…' : 'Create VM'}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
