import { useState, type FormEvent } from 'react';
import { listAll } from '../api/client.js';
import type { VmcastPackage, VmcastPollResult, VmcastRelease, VmPackages } from '../api/types.js';
import { PageTitle } from '../components/PageTitle.js';
import { EmptyRow, ErrorNote, Loading } from '../components/ui.js';
import { formatBytes, formatTime } from '../format.js';
import { useApp, useAsync, useEvents, useResync } from '../live.js';
import { Link } from '../router.js';
import { SelectField } from '../components/SelectField.js';
import { TableHead } from '../components/TableHead.js';

const short = (keyId: string) => `${keyId.slice(0, 12)}…`;

/** A file input's file as base64 (a package archive to publish). */
async function fileBase64(file: File): Promise<string> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/**
 * VMcasting: what this manager publishes (keys, channels, releases, the public
 * feed and catalog), the feeds it subscribes to (poll, pinned keys, releases
 * with the reason of a quarantine) and the VMs that follow a channel.
 */
export function FeedsPage() {
  const { api } = useApp();
  const keys = useAsync(async () => (await api.vmcastKeys()).items, 'vmcast-keys');
  const channels = useAsync(async () => (await api.vmcastChannels()).items, 'vmcast-channels');
  const subscriptions = useAsync(async () => (await api.vmcastSubscriptions()).items, 'vmcast-subscriptions');
  const follows = useAsync(async () => (await api.vmcastFollows()).items, 'vmcast-follows');
  const images = useAsync(async () => (await listAll((p) => api.images(p))).items.filter((i) => i.format === 'qcow2'), 'vmcast-images');
  const vms = useAsync(async () => (await listAll((p) => api.vms(p))).items, 'vmcast-vms');
  const [error, setError] = useState<unknown>(undefined);
  const [releases, setReleases] = useState<{ title: string; items: VmcastRelease[] } | undefined>(undefined);
  const [pollResult, setPollResult] = useState<VmcastPollResult | undefined>(undefined);
  const [packages, setPackages] = useState<{ title: string; items: VmcastPackage[] } | undefined>(undefined);
  const [vmPackages, setVmPackages] = useState<VmPackages | undefined>(undefined);
  const reloadAll = () => {
    keys.reload();
    channels.reload();
    subscriptions.reload();
    follows.reload();
    if (vmPackages) api.vmPackages(vmPackages.vm).then(setVmPackages, () => undefined);
  };
  useEvents((event) => {
    if (event.type.startsWith('vmcast.')) reloadAll();
  });
  useResync(reloadAll);

  const run = (action: () => Promise<unknown>) => {
    setError(undefined);
    action().then(reloadAll, setError);
  };
  const submit = (event: FormEvent<HTMLFormElement>, action: (form: FormData) => Promise<unknown>) => {
    event.preventDefault();
    const form = event.currentTarget;
    const data = new FormData(form);
    setError(undefined);
    action(data).then(() => {
      form.reset();
      reloadAll();
    }, setError);
  };
  const text = (form: FormData, name: string) => String(form.get(name) ?? '').trim();

  return (
    <>
      <PageTitle title="Feeds and channels" />
      <p className="muted">
        VMcasting: appliance releases travel as RSS feeds. This manager publishes channels signed with its Ed25519 keys, subscribes to other feeds with pinned keys, verifies every release before it enters the image
        library, and updates the VMs that follow a channel along their policy (auto, notify or pinned).
      </p>
      <ErrorNote error={error} onDismiss={() => setError(undefined)} />

      <section className="panel" aria-labelledby="keys-title">
        <h2 id="keys-title">Publisher keys</h2>
        <ErrorNote error={keys.error} />
        {!keys.data && !keys.error && <Loading what="keys" />}
        {keys.data && (
          <table className="table responsive">
            <TableHead columns={['Name', 'Key id', 'State', 'Created']} actions />
            <tbody>
              {keys.data.length === 0 && <EmptyRow columns={5}>No key yet: create one to publish.</EmptyRow>}
              {keys.data.map((key) => (
                <tr key={key.id} data-key={key.name}>
                  <td data-label="Name">{key.name}</td>
                  <td data-label="Key id">
                    <code title={key.publicKey}>{short(key.keyId)}</code>
                  </td>
                  <td data-label="State">{key.state}</td>
                  <td data-label="Created">{formatTime(key.createdAt)}</td>
                  <td className="row-actions">
                    {key.state !== 'revoked' && (
                      <button type="button" onClick={() => run(() => api.revokeVmcastKey(key.name))}>
                        Revoke<span className="visually-hidden"> key {key.name}</span>
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <form className="inline-form" onSubmit={(e) => submit(e, (f) => api.createVmcastKey(text(f, 'name')))}>
          <label>
            Key name <input name="name" required pattern="[a-z0-9][a-z0-9_.\-]*" />
          </label>
          <button type="submit">Create key (rotates)</button>
        </form>
      </section>

      <section className="panel" aria-labelledby="channels-title">
        <h2 id="channels-title">Published channels</h2>
        <ErrorNote error={channels.error} />
        {channels.data && (
          <table className="table responsive">
            <TableHead columns={['Channel', 'Feed', 'Publish a release']} actions />
            <tbody>
              {channels.data.length === 0 && <EmptyRow columns={4}>No channel yet.</EmptyRow>}
              {channels.data.map((channel) => (
                <tr key={channel.id} data-channel={channel.name}>
                  <td data-label="Channel">
                    {channel.name}
                    <div className="muted small">{channel.title}</div>
                  </td>
                  <td data-label="Feed">
                    <a href={api.vmcastFeedUrl(channel.name)}>RSS</a> · <a href={api.vmcastCatalogUrl(channel.name)}>JSON catalog</a>
                  </td>
                  <td data-label="Publish">
                    <form
                      className="inline-form"
                      onSubmit={(e) =>
                        submit(e, (f) =>
                          api.publishVmcastRelease(channel.name, {
                            image: text(f, 'image'),
                            ...(text(f, 'version') ? { version: text(f, 'version') } : {}),
                            bootMethod: text(f, 'bootMethod') as 'disk' | 'appliance-kernel',
                          }),
                        )
                      }
                    >
                      <SelectField label="Image" name="image" required options={(images.data ?? []).map((i) => ({ key: i.id, value: `${i.name}:${i.version}`, label: `${i.name}:${i.version}` }))} />
                      <label>
                        Version <input name="version" size={8} />
                      </label>
                      <SelectField label="Boot" name="bootMethod" options={['disk', { key: 'appliance-kernel', value: 'appliance-kernel', label: 'appliance kernel' }]} />
                      <button type="submit">Publish<span className="visually-hidden"> on {channel.name}</span></button>
                    </form>
                    <form
                      className="inline-form"
                      onSubmit={(e) =>
                        submit(e, async (f) => {
                          const file = f.get('archive');
                          if (!(file instanceof File) || file.size === 0) throw new Error('Choose a package archive (.tar.gz)');
                          return api.publishVmcastPackage(channel.name, { name: text(f, 'packageName'), version: text(f, 'packageVersion'), archiveBase64: await fileBase64(file) });
                        })
                      }
                    >
                      <label>
                        Package file <input name="archive" type="file" accept=".tar.gz,.tgz,application/gzip" required />
                      </label>
                      <label>
                        Package name <input name="packageName" size={8} required />
                      </label>
                      <label>
                        Package version <input name="packageVersion" size={6} required />
                      </label>
                      <button type="submit">Publish package<span className="visually-hidden"> on {channel.name}</span></button>
                    </form>
                  </td>
                  <td className="row-actions">
                    <button type="button" onClick={() => api.vmcastChannelReleases(channel.name).then((r) => setReleases({ title: `Releases of channel ${channel.name}`, items: r.items }), setError)}>
                      Releases<span className="visually-hidden"> of {channel.name}</span>
                    </button>
                    <button type="button" onClick={() => api.vmcastChannelPackages(channel.name).then((r) => setPackages({ title: `Packages of channel ${channel.name}`, items: r.items }), setError)}>
                      Packages<span className="visually-hidden"> of {channel.name}</span>
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <form className="inline-form" onSubmit={(e) => submit(e, (f) => api.createVmcastChannel({ name: text(f, 'name'), ...(text(f, 'title') ? { title: text(f, 'title') } : {}) }))}>
          <label>
            Channel name <input name="name" required />
          </label>
          <label>
            Title <input name="title" />
          </label>
          <button type="submit">Create channel</button>
        </form>
      </section>

      <section className="panel" aria-labelledby="subs-title">
        <h2 id="subs-title">Subscriptions</h2>
        <ErrorNote error={subscriptions.error} />
        {pollResult && (
          <p role="status" className="poll-result">
            Polled {pollResult.subscription}: {pollResult.status === 304 ? 'unchanged (304)' : `HTTP ${pollResult.status}, ${formatBytes(pollResult.bodyBytes)}`}; imported {pollResult.imported.length ? pollResult.imported.join(', ') : 'nothing'}
            {pollResult.quarantined.map((q) => `; quarantined ${q.release}: ${q.reason}`).join('')}
            {pollResult.error ? `; ${pollResult.error}` : ''}
          </p>
        )}
        {subscriptions.data && (
          <table className="table responsive">
            <TableHead columns={['Channel', 'Feed URL', 'Pinned keys', 'Last poll']} actions />
            <tbody>
              {subscriptions.data.length === 0 && <EmptyRow columns={5}>No subscription yet.</EmptyRow>}
              {subscriptions.data.map((sub) => (
                <tr key={sub.id} data-subscription={sub.name}>
                  <td data-label="Channel">{sub.name}</td>
                  <td data-label="Feed URL" className="break">
                    <code>{sub.url}</code>
                  </td>
                  <td data-label="Pinned keys">
                    {sub.pinnedKeys.map((k) => (
                      <div key={k.keyId}>
                        <code>{short(k.keyId)}</code> {k.revoked ? '(revoked)' : <button type="button" className="link-button" onClick={() => run(() => api.revokePinnedKey(sub.name, k.keyId))}>Revoke pin</button>}
                      </div>
                    ))}
                  </td>
                  <td data-label="Last poll">
                    {formatTime(sub.lastPolledAt)}
                    {sub.lastError && <div className="error-text small">{sub.lastError}</div>}
                  </td>
                  <td className="row-actions">
                    <button type="button" onClick={() => run(async () => setPollResult(await api.pollVmcast(sub.name)))}>
                      Poll now<span className="visually-hidden"> {sub.name}</span>
                    </button>
                    <button type="button" onClick={() => api.vmcastSubscriptionReleases(sub.name).then((r) => setReleases({ title: `Releases received on ${sub.name}`, items: r.items }), setError)}>
                      Releases<span className="visually-hidden"> of {sub.name}</span>
                    </button>
                    <button type="button" onClick={() => api.vmcastSubscriptionPackages(sub.name).then((r) => setPackages({ title: `Packages received on ${sub.name}`, items: r.items }), setError)}>
                      Packages<span className="visually-hidden"> of {sub.name}</span>
                    </button>
                    <button type="button" onClick={() => run(() => api.unsubscribeVmcast(sub.name))}>
                      Unsubscribe<span className="visually-hidden"> {sub.name}</span>
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <form
          className="stack-form"
          onSubmit={(e) =>
            submit(e, (f) =>
              api.subscribeVmcast({
                name: text(f, 'name'),
                url: text(f, 'url'),
                pinnedKeys: [text(f, 'key')],
                ...(text(f, 'hosts') ? { allowedHosts: text(f, 'hosts').split(/[\s,]+/) } : {}),
              }),
            )
          }
        >
          <label>
            Channel name <input name="name" required />
          </label>
          <label>
            Feed URL <input name="url" type="url" required />
          </label>
          <label>
            Publisher key (PEM) <textarea name="key" rows={3} required />
          </label>
          <label>
            Allowed image hosts (optional) <input name="hosts" />
          </label>
          <button type="submit">Subscribe</button>
        </form>
      </section>

      {releases && (
        <section className="panel" aria-labelledby="releases-title">
          <h2 id="releases-title">{releases.title}</h2>
          <table className="table responsive">
            <TableHead columns={['Release', 'State', 'Size', 'Reason']} />
            <tbody>
              {releases.items.length === 0 && <EmptyRow columns={4}>No release.</EmptyRow>}
              {releases.items.map((r) => (
                <tr key={r.id} data-release={`${r.name}:${r.version}`}>
                  <td data-label="Release">
                    {r.name} {r.version}
                  </td>
                  <td data-label="State">{r.state}</td>
                  <td data-label="Size">{formatBytes(Number(r.manifest.sizeBytes ?? 0))}</td>
                  <td data-label="Reason" className="break">
                    {r.reason ?? '—'}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <button type="button" onClick={() => setReleases(undefined)}>
            Close releases
          </button>
        </section>
      )}

      {packages && (
        <section className="panel" aria-labelledby="packages-title">
          <h2 id="packages-title">{packages.title}</h2>
          <table className="table responsive">
            <TableHead columns={['Package', 'State', 'Size', 'Reason']} />
            <tbody>
              {packages.items.length === 0 && <EmptyRow columns={4}>No package.</EmptyRow>}
              {packages.items.map((p) => (
                <tr key={p.id} data-package={`${p.name}:${p.version}`}>
                  <td data-label="Package">
                    {p.name} {p.version}
                  </td>
                  <td data-label="State">{p.state}</td>
                  <td data-label="Size">{formatBytes(p.sizeBytes)}</td>
                  <td data-label="Reason" className="break">
                    {p.reason ?? '—'}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <button type="button" onClick={() => setPackages(undefined)}>
            Close packages
          </button>
        </section>
      )}

      <section className="panel" aria-labelledby="follows-title">
        <h2 id="follows-title">VMs following a channel</h2>
        <ErrorNote error={follows.error} />
        {follows.data && (
          <table className="table responsive">
            <TableHead columns={['VM', 'Channel', 'Policy', 'Current', 'Pending']} actions />
            <tbody>
              {follows.data.length === 0 && <EmptyRow columns={6}>No VM follows a channel.</EmptyRow>}
              {follows.data.map((f) => (
                <tr key={f.vmId} data-follow={f.vm}>
                  <td data-label="VM">
                    <Link to={`/vms/${encodeURIComponent(f.vm)}`}>{f.vm}</Link>
                  </td>
                  <td data-label="Channel">{f.channel}</td>
                  <td data-label="Policy">
                    {f.policy}
                    {f.held ? ' (held)' : ''}
                  </td>
                  <td data-label="Current">{f.currentRelease ?? '—'}</td>
                  <td data-label="Pending">{f.pendingRelease ?? '—'}</td>
                  <td className="row-actions">
                    <button type="button" onClick={() => run(() => api.holdVm(f.vm, !f.held))}>
                      {f.held ? 'Release hold' : 'Hold'}
                      <span className="visually-hidden"> {f.vm}</span>
                    </button>
                    {f.pendingRelease && !f.held && (
                      <button type="button" onClick={() => run(() => api.applyVmUpdate(f.vm))}>
                        Apply update<span className="visually-hidden"> to {f.vm}</span>
                      </button>
                    )}
                    <button type="button" onClick={() => api.vmPackages(f.vm).then(setVmPackages, setError)}>
                      Packages<span className="visually-hidden"> of VM {f.vm}</span>
                    </button>
                    <button type="button" onClick={() => run(() => api.unfollowChannel(f.vm))}>
                      Unfollow<span className="visually-hidden"> {f.vm}</span>
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <form className="inline-form" onSubmit={(e) => submit(e, (f) => api.followChannel(text(f, 'vm'), { channel: text(f, 'channel'), policy: text(f, 'policy') as 'auto' }))}>
          <SelectField label="VM" name="vm" required options={(vms.data ?? []).map((vm) => ({ key: vm.id, value: vm.name, label: vm.name }))} />
          <SelectField label="Channel" name="channel" required options={(subscriptions.data ?? []).map((sub) => ({ key: sub.id, value: sub.name, label: sub.name }))} />
          <SelectField label="Policy" name="policy" options={['notify', 'auto', 'pinned']} />
          <button type="submit">Follow</button>
        </form>
      </section>

      {vmPackages && (
        <section className="panel" aria-labelledby="vm-packages-title">
          <h2 id="vm-packages-title">Packages of VM {vmPackages.vm}</h2>
          <p className="muted">
            {vmPackages.channel ? `Channel ${vmPackages.channel}, policy ${vmPackages.policy}${vmPackages.held ? ' (held: nothing is offered)' : ''}.` : 'Follows no channel.'} The guest last reported{' '}
            {vmPackages.reportedAt ? formatTime(vmPackages.reportedAt) : 'nothing yet'}
            {vmPackages.pushedTo ? `; the offer is on host ${vmPackages.pushedTo}` : ''}.
          </p>
          <table className="table responsive">
            <TableHead columns={['Package', 'Installed', 'Offered', 'Pending']} actions />
            <tbody>
              {(() => {
                const names = [...new Set([...vmPackages.installed, ...vmPackages.offered, ...vmPackages.pending].map((p) => p.name))].sort();
                const version = (list: VmPackages['installed'], name: string) => list.find((p) => p.name === name)?.version ?? '—';
                if (names.length === 0) return <EmptyRow columns={5}>No package.</EmptyRow>;
                return names.map((name) => (
                  <tr key={name} data-vm-package={name}>
                    <td data-label="Package">{name}</td>
                    <td data-label="Installed">{version(vmPackages.installed, name)}</td>
                    <td data-label="Offered">{version(vmPackages.offered, name)}</td>
                    <td data-label="Pending">{version(vmPackages.pending, name)}</td>
                    <td className="row-actions">
                      {vmPackages.pending.some((p) => p.name === name) && (
                        <button type="button" onClick={() => api.approveVmPackages(vmPackages.vm, [name]).then(setVmPackages, setError)}>
                          Approve<span className="visually-hidden"> {name}</span>
                        </button>
                      )}
                    </td>
                  </tr>
                ));
              })()}
            </tbody>
          </table>
          <button type="button" onClick={() => setVmPackages(undefined)}>
            Close VM packages
          </button>
        </section>
      )}
    </>
  );
}
