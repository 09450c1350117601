import type { SecurityGroupRuleInput } from '@drover/api';
import type { NetworkService } from '../networks/network.service.js';
import type { LabNetworking } from './lab.service.js';

/**
 * Labs on the manager's networks (networks/): a lab's networks and security
 * groups are ordinary ones that carry the lab's name (`lab`), so the network
 * API lists them with their lab and refuses to delete a network with NICs.
 */
export function labNetworking(networks: NetworkService): LabNetworking {
  return {
    async createNetwork(input) {
      await networks.createNetwork({ name: input.name, kind: input.kind, subnet: input.subnet, labels: input.labels, lab: input.lab }, input.owner);
    },
    async deleteNetwork(name) {
      await networks.deleteNetwork(name);
    },
    async createGroup(input) {
      // Empty first, rules after: a rule may name a group of the lab made after this one.
      await networks.createGroup({ name: input.name, lab: input.lab }, input.owner);
    },
    async setGroupRules(name, rules) {
      await networks.setRules(name, rules as SecurityGroupRuleInput[]);
    },
    async deleteGroup(name) {
      await networks.deleteGroup(name);
    },
    async usedSubnets() {
      return (await networks.listNetworks()).filter((n) => n.lab === null).map((n) => n.subnet);
    },
  };
}
