/**
 * @drover/appliances: builds the small bootable appliances (web, db, counter)
 * and the acceleration probe image from the host's Debian cloud kernel and
 * busybox-static, cached by content hash. See ../README.md.
 */
export {
  buildAppliance,
  buildAllAppliances,
  buildProbeImage,
  defaultApplianceCacheDir,
  type ApplianceArtifacts,
  type BuildOptions,
  type ProbeImage,
} from './build.js';
export {
  APPLIANCES,
  APPLIANCE_NAMES,
  BASE_CMDLINE,
  PROBE_EXPECT,
  READY_PATTERN,
  isApplianceName,
  type ApplianceName,
  type ApplianceSpec,
} from './catalog.js';
