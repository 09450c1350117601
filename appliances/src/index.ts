/**
 * @drover/appliances: builds the small bootable appliances (web, db, counter)
 * and the acceleration probe image from the host's Debian cloud kernel and
 * busybox-static, cached by content hash. See ../README.md.
 */
export {
  buildAppliance,
  buildAllAppliances,
  buildLiveIso,
  buildProbeImage,
  defaultApplianceCacheDir,
  type ApplianceArtifacts,
  type BuildOptions,
  type LiveIso,
  type ProbeImage,
} from './build.js';
export {
  APPLIANCES,
  APPLIANCE_NAMES,
  BASE_CMDLINE,
  LIVE_ISO_EXPECT,
  LIVE_ISO_VERSION,
  PROBE_EXPECT,
  READY_PATTERN,
  isApplianceName,
  type ApplianceName,
  type ApplianceSpec,
} from './catalog.js';
