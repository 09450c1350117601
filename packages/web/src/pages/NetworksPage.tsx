import { useId, useState, type FormEvent } from 'react';
import { InputError } from '../api/client.js';
import type { NetworkCreate, SecurityGroup, SecurityGroupRuleInput, Vm } from '../api/types.js';
import { PageTitle } from '../components/PageTitle.js';
import { TableHead } from '../components/TableHead.js';
import { EmptyRow, ErrorNote, Loading } from '../components/ui.js';
import { useApp, useAsync } from '../live.js';

/** A rule as one line: "ingress tcp 80 from 10.0.0.0/8". */
export function ruleLine(rule: SecurityGroupRuleInput): string {
  const ports = rule.ports ? ` ${rule.ports.from === rule.ports.to ? rule.ports.from : `${rule.ports.from}-${rule.ports.to}`}` : '';
  const icmp = rule.icmpType !== undefined ? ` type ${rule.icmpType}` : '';
  const peer = rule.cidr ?? (rule.group ? `group ${rule.group}` : 'anywhere');
  return `${rule.direction} ${rule.protocol}${ports}${icmp} ${rule.direction === 'ingress' ? 'from' : 'to'} ${peer}`;
}

/** Runs an action with busy/error state; the error shows in the form's ErrorNote. */
function useAction(): { busy: boolean; error: unknown; setError: (e: unknown) => void; run: (action: () => Promise<unknown>) => Promise<boolean> } {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const run = async (action: () => Promise<unknown>) => {
    setBusy(true);
    setError(undefined);
    try {
      await action();
      return true;
    } catch (e) {
      setError(e);
      return false;
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, setError, run };
}

/**
 * Networks and security groups (docs/networks.md): the networks with their
 * NICs and hosts, create and delete; the security groups with their numbered
 * rules, create, delete, add and remove rules. A VM's effective rules are on
 * its page (VmFirewall).
 */
export function NetworksPage() {
  const { api } = useApp();
  const networks = useAsync(() => api.networks(), 'networks');
  const groups = useAsync(() => api.securityGroups(), 'security-groups');
  return (
    <>
      <PageTitle title="Networks" />
      <p className="muted">
        Bridged, NAT and isolated networks; the manager hands out addresses and MACs, each host gets its bridges, DHCP and nftables rules before a VM starts there. Security groups are
        stateful: a NIC with a group gets only the inbound traffic its rules allow.
      </p>
      <NetworksPanel networks={networks.data?.items} error={networks.error} onChanged={() => networks.reload()} />
      <GroupsPanel groups={groups.data?.items} error={groups.error} onChanged={() => groups.reload()} />
    </>
  );
}

function NetworksPanel({ networks, error, onChanged }: { networks: Awaited<ReturnType<ReturnType<typeof useApp>['api']['networks']>>['items'] | undefined; error: unknown; onChanged: () => void }) {
  const { api } = useApp();
  const id = useId();
  const action = useAction();
  const [kind, setKind] = useState<NetworkCreate['kind']>('nat');
  const create = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const name = String(form.get('name') ?? '').trim();
    const subnet = String(form.get('subnet') ?? '').trim();
    const uplink = String(form.get('uplink') ?? '').trim();
    const target = event.currentTarget;
    const ok = await action.run(async () => {
      if (!name) throw new InputError('Name the network');
      if (!subnet) throw new InputError('Give the subnet, e.g. 10.42.0.0/24');
      await api.createNetwork({ name, kind, subnet, ...(uplink ? { uplink } : {}) });
    });
    if (ok) {
      target.reset();
      onChanged();
    }
  };
  return (
    <section className="panel" aria-labelledby={`${id}-title`}>
      <h2 id={`${id}-title`}>Networks</h2>
      <ErrorNote error={error} />
      {networks === undefined && !error && <Loading what="the networks" />}
      {networks && (
        <table className="table responsive">
          <caption className="visually-hidden">Networks</caption>
          <TableHead columns={['Name', 'Kind', 'Subnet', 'Gateway', 'NICs', 'Hosts']} actions />
          <tbody>
            {networks.length === 0 && <EmptyRow columns={7}>No networks yet.</EmptyRow>}
            {networks.map((n) => (
              <tr key={n.id} data-network={n.name}>
                <td data-label="Name">{n.name}</td>
                <td data-label="Kind">{n.kind}</td>
                <td data-label="Subnet">{n.subnet}</td>
                <td data-label="Gateway">{n.gateway}</td>
                <td data-label="NICs">{n.nics}</td>
                <td data-label="Hosts">{n.hosts.join(', ') || '—'}</td>
                <td>
                  <button type="button" disabled={action.busy} aria-label={`Delete network ${n.name}`} onClick={() => void action.run(() => api.deleteNetwork(n.name)).then((ok) => ok && onChanged())}>
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form onSubmit={(e) => void create(e)} aria-label="Create a network">
        <h3>Create a network</h3>
        <label htmlFor={`${id}-name`}>Name</label>
        <input id={`${id}-name`} name="name" placeholder="pub" autoComplete="off" />
        <label htmlFor={`${id}-kind`}>Kind</label>
        <select id={`${id}-kind`} value={kind} onChange={(e) => setKind(e.target.value as NetworkCreate['kind'])}>
          <option value="nat">NAT</option>
          <option value="isolated">Isolated</option>
          <option value="bridged">Bridged</option>
        </select>
        <label htmlFor={`${id}-subnet`}>Subnet</label>
        <input id={`${id}-subnet`} name="subnet" placeholder="10.42.0.0/24" autoComplete="off" />
        <label htmlFor={`${id}-uplink`}>Uplink</label>
        <input id={`${id}-uplink`} name="uplink" placeholder="eth0 (bridged, NAT)" autoComplete="off" />
        <div className="form-actions">
          <button type="submit" className="primary" disabled={action.busy}>
            Create network
          </button>
        </div>
      </form>
      <ErrorNote error={action.error} onDismiss={() => action.setError(undefined)} />
    </section>
  );
}

function GroupsPanel({ groups, error, onChanged }: { groups: SecurityGroup[] | undefined; error: unknown; onChanged: () => void }) {
  const { api } = useApp();
  const id = useId();
  const action = useAction();
  const create = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const target = event.currentTarget;
    const name = String(new FormData(target).get('name') ?? '').trim();
    const ok = await action.run(async () => {
      if (!name) throw new InputError('Name the security group');
      await api.createSecurityGroup({ name });
    });
    if (ok) {
      target.reset();
      onChanged();
    }
  };
  return (
    <section className="panel" aria-labelledby={`${id}-title`}>
      <h2 id={`${id}-title`}>Security groups</h2>
      <ErrorNote error={error} />
      {groups === undefined && !error && <Loading what="the security groups" />}
      {groups?.length === 0 && <p>No security groups yet.</p>}
      {groups?.map((group) => <Group key={group.id} group={group} onChanged={onChanged} />)}
      <form onSubmit={(e) => void create(e)} aria-label="Create a security group">
        <h3>Create a security group</h3>
        <label htmlFor={`${id}-name`}>Group name</label>
        <input id={`${id}-name`} name="name" placeholder="web" autoComplete="off" />
        <div className="form-actions">
          <button type="submit" className="primary" disabled={action.busy}>
            Create group
          </button>
        </div>
      </form>
      <ErrorNote error={action.error} onDismiss={() => action.setError(undefined)} />
    </section>
  );
}

function Group({ group, onChanged }: { group: SecurityGroup; onChanged: () => void }) {
  const { api } = useApp();
  const id = useId();
  const action = useAction();
  const add = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const target = event.currentTarget;
    const form = new FormData(target);
    const get = (key: string) => String(form.get(key) ?? '').trim();
    const ok = await action.run(async () => {
      const rule: SecurityGroupRuleInput = { direction: get('direction') as 'ingress', protocol: get('protocol') as 'tcp' };
      const ports = get('ports');
      if (ports) {
        const match = /^(\d+)(?:-(\d+))?$/.exec(ports);
        if (!match) throw new InputError(`Ports "${ports}" are not PORT or FROM-TO`);
        rule.ports = { from: Number(match[1]), to: Number(match[2] ?? match[1]) };
      }
      const peer = get('peer');
      if (peer.startsWith('group:')) rule.group = peer.slice(6);
      else if (peer) rule.cidr = peer;
      await api.addSecurityGroupRule(group.name, rule);
    });
    if (ok) {
      target.reset();
      onChanged();
    }
  };
  return (
    <div className="subpanel" data-group={group.name}>
      <h3>
        {group.name}{' '}
        <button type="button" disabled={action.busy} aria-label={`Delete security group ${group.name}`} onClick={() => void action.run(() => api.deleteSecurityGroup(group.name)).then((ok) => ok && onChanged())}>
          Delete
        </button>
      </h3>
      <ol aria-label={`Rules of ${group.name}`}>
        {group.rules.length === 0 && <li className="muted">No rules: every inbound connection is refused on its NICs.</li>}
        {group.rules.map((rule, index) => (
          <li key={index} data-rule={index + 1}>
            <code>{ruleLine(rule)}</code>{' '}
            <button type="button" disabled={action.busy} aria-label={`Remove rule ${index + 1} of ${group.name}`} onClick={() => void action.run(() => api.removeSecurityGroupRule(group.name, index + 1)).then((ok) => ok && onChanged())}>
              Remove
            </button>
          </li>
        ))}
      </ol>
      <form className="inline" onSubmit={(e) => void add(e)} aria-label={`Add a rule to ${group.name}`}>
        <label htmlFor={`${id}-dir`}>Direction</label>
        <select id={`${id}-dir`} name="direction" defaultValue="ingress">
          <option value="ingress">ingress</option>
          <option value="egress">egress</option>
        </select>
        <label htmlFor={`${id}-proto`}>Protocol</label>
        <select id={`${id}-proto`} name="protocol" defaultValue="tcp">
          <option value="tcp">tcp</option>
          <option value="udp">udp</option>
          <option value="icmp">icmp</option>
          <option value="any">any</option>
        </select>
        <label htmlFor={`${id}-ports`}>Ports</label>
        <input id={`${id}-ports`} name="ports" placeholder="80 or 8000-8100" autoComplete="off" />
        <label htmlFor={`${id}-peer`}>Peer</label>
        <input id={`${id}-peer`} name="peer" placeholder="10.0.0.0/8 or group:admin (empty: anywhere)" autoComplete="off" />
        <button type="submit" disabled={action.busy}>
          Add rule
        </button>
      </form>
      <ErrorNote error={action.error} onDismiss={() => action.setError(undefined)} />
    </div>
  );
}

/** The VM page's panel: its NICs on networks and its effective firewall (`drover fw explain`). */
export function VmFirewall({ vm }: { vm: Vm }) {
  const { api } = useApp();
  const id = useId();
  const nics = useAsync(() => api.vmNetworks(vm.id), `vm-networks-${vm.id}-${vm.rev}`);
  const explain = useAsync(() => api.vmFirewall(vm.id), `vm-firewall-${vm.id}-${vm.rev}-${vm.state}`);
  if (nics.data && nics.data.items.length === 0) return null;
  return (
    <section className="panel" aria-labelledby={`${id}-title`}>
      <h2 id={`${id}-title`}>Networks and firewall</h2>
      <ErrorNote error={nics.error ?? explain.error} />
      {nics.data && (
        <table className="table responsive">
          <caption className="visually-hidden">NICs on networks</caption>
          <TableHead columns={['NIC', 'Network', 'Address', 'MAC', 'Security groups']} />
          <tbody>
            {nics.data.items.map((nic) => (
              <tr key={nic.index} data-nic={nic.nic}>
                <td data-label="NIC">{nic.nic}</td>
                <td data-label="Network">{nic.network}</td>
                <td data-label="Address">{nic.ip}</td>
                <td data-label="MAC">{nic.mac}</td>
                <td data-label="Security groups">{nic.securityGroups.join(', ') || '—'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>Effective rules</h3>
      <button type="button" onClick={() => explain.reload()}>
        Refresh rules
      </button>
      {explain.data ? <pre data-firewall={vm.name}>{explain.data.text}</pre> : !explain.error && <Loading what="the rules" />}
    </section>
  );
}
