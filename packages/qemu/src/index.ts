/**
 * @drover/qemu: everything Drover needs to drive QEMU on one host: the launch config and
 * its command line, spawning and tracking QEMU processes, a QMP client, qemu-img under
 * resource limits (with inspection of untrusted images), and the KVM/TCG probe.
 */
export type {
  Accelerator,
  BootConfig,
  DiskConfig,
  HostForward,
  IscsiLun,
  NicConfig,
  QemuLaunchConfig,
} from './launch-config.js';

export { buildQemuArgv, escapeOptionValue, findQmpSocket, qemuMemoryArg, sandboxOption, splitOptionString, tcgMemoryShortfallKiB } from './argv.js';

export {
  diskBlockdevs,
  diskDevice,
  maxRootPorts,
  nicDevice,
  nicNetdevArgs,
  nicNetdevOption,
  optionString,
  rootPortId,
  rootPortProps,
  type QemuProps,
} from './devices.js';

export { deletedDeviceId, plugDisk, plugNic, releaseDiskNodes, releaseNicBackend, unplugDevice } from './hotplug.js';

export {
  baseMigrationCapabilities,
  plainMigrationParameters,
  QmpClient,
  QmpCommandError,
  QmpJobError,
  type BlockImageInfo,
  type BlockInfo,
  type JobInfo,
  type MigrationCapabilityStatus,
  type MigrationInfo,
  type MigrationParameters,
  type MigrationStats,
  type QemuRunState,
  type QemuStatus,
  type QmpConnectOptions,
  type QmpEvent,
  type QmpExecuteOptions,
  type QmpGreeting,
  type SnapshotDeleteOptions,
  type SnapshotJobOptions,
  type SnapshotLoadOptions,
  type SnapshotSaveOptions,
} from './qmp-client.js';

export {
  isSameProcess,
  killProcess,
  readProcessInfo,
  readProcessStat,
  spawnQemu,
  waitForExit,
  type ProcessInfo,
  type SpawnQemuOptions,
  type SpawnedQemu,
} from './process.js';

export {
  QemuImg,
  createQemuImg,
  defaultQemuImgLimits,
  qemuImgArgv,
  runLimitedTool,
  runQemuImg,
  untrustedImageProblems,
  type ImageCheckResult,
  type ImageFormat,
  type ImageInfo,
  type ImageSnapshot,
  type InspectOptions,
  type QemuImgApi,
  type QemuImgLimits,
  type QemuImgOptions,
  type RunContext,
} from './qemu-img.js';

export {
  parseAccelOverride,
  probeAccelerator,
  resolveAccelerator,
  type AccelOverride,
  type AcceleratorChoice,
  type ProbeAcceleratorOptions,
} from './accel.js';
