export * from './firewall-model.js';
export { renderRuleset, DROVER_TABLES, TAP_PREFIX, type RenderedRuleset } from './nft-render.js';
export { applyHostFirewall, loadRuleset, listDroverTables, removeDroverTables, type NftOptions } from './nft-apply.js';
export { HostNetworks, type HostNetworksOptions } from './host-network.js';
export { startMetadataServer, identifyCaller, type VmMetadata, type MetadataLookup, type CallerIdentity } from './metadata-server.js';
export { allocateAddress, allocateMac, checkRequestedAddress, checkSubnetFree } from './ipam.js';
export { NetworkStateService } from './network-state.service.js';
export { GuestPackageStore, maxGuestPackageBytes, type InstalledPackage } from './guest-packages.js';
