import { useState, type FormEvent } from 'react';
import { listAll } from '../api/client.js';
import type { VmcastPollResult, VmcastRelease } from '../api/types.js';
import { PageTitle } from '../components/PageTitle.js';
import { EmptyRow, ErrorNote, Loading } from '../components/ui.js';
import { formatBytes, formatTime } from '../format.js';
import { useApp, useAsync, useEvents, useResync } from '../live.js';
import { Link } from '../router.js';
import { SelectField } from '../components/SelectField.js';
import { TableHead } from '../components/TableHead.js';

const short = (keyId: string) => `${keyId.slice(0, 12)}…`;

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
  const reloadAll = () => {
    keys.reload();
    channels.reload();
    subscriptions.reload();
    follows.reload();
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
                  </td>
                  <td className="row-actions">
                    <button type="button" onClick={() => api.vmcastChannelReleases(channel.name).then((r) => setReleases({ title: `Releases of channel ${channel.name}`, items: r.items }), setError)}>
                      Releases<span className="visually-hidden"> of {channel.name}</span>
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
    </>
  );
}
