import type { HostNetworkState } from '../firewall-model.js';

/** A host with one network of each kind, two groups (one referring to the other), three NICs. */
export const labState: HostNetworkState = {
  networks: [
    { name: 'lab', kind: 'isolated', subnet: '10.77.1.0/24', gateway: '10.77.1.1', bridge: 'drbr-lab' },
    { name: 'outside', kind: 'nat', subnet: '10.77.2.0/24', gateway: '10.77.2.1', bridge: 'drbr-nat', uplink: 'eth0' },
    { name: 'office', kind: 'bridged', subnet: '10.77.3.0/24', gateway: '10.77.3.1', bridge: 'drbr-office', uplink: 'eth1', mtu: 1450,
      vxlan: { vni: 42, local: '10.9.0.11', remotes: ['10.9.0.12'], device: 'dvx42' } },
  ],
  groups: [
    { name: 'web', rules: [
      { direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 }, cidr: '10.77.2.0/24' },
      { direction: 'ingress', protocol: 'tcp', ports: { from: 8000, to: 8100 }, group: 'admin' },
      { direction: 'ingress', protocol: 'icmp', icmpType: 8, group: 'admin' },
    ] },
    { name: 'admin', rules: [
      { direction: 'egress', protocol: 'tcp', ports: { from: 1, to: 65535 } },
      { direction: 'egress', protocol: 'udp', ports: { from: 53, to: 53 }, cidr: '10.77.3.0/24' },
      { direction: 'ingress', protocol: 'any', cidr: '10.77.3.0/24' },
    ] },
  ],
  nics: [
    { vm: 'web-1', nic: 'eth0', network: 'lab', tap: 'dt1', mac: '52:54:00:00:00:01', ip: '10.77.1.10', groups: ['web'] },
    { vm: 'admin-1', nic: 'eth0', network: 'outside', tap: 'dt2', mac: '52:54:00:00:00:02', ip: '10.77.2.10', groups: ['admin'] },
    { vm: 'plain-1', nic: 'eth0', network: 'office', tap: 'dt3', mac: '52:54:00:00:00:03', ip: '10.77.3.20', groups: [] },
  ],
  hostRules: [{ network: 'outside', protocol: 'tcp', ports: { from: 22, to: 22 }, cidr: '10.77.2.0/28', action: 'accept' }],
  groupMembers: { admin: ['10.77.3.99'] },
};
