/**
 * Everything needed to start one QEMU process, with every path already resolved.
 * The agent turns a VM spec (API) into this; `buildQemuArgv` turns this into argv.
 */
export type Accelerator = 'kvm' | 'tcg';

export interface DiskConfig {
  /** qdev id and blockdev node-name prefix; the format node is named exactly `nodeName`. */
  nodeName: string;
  /** The image file; for an iSCSI LUN its `iscsi://` URL (shown in messages only: `iscsi` says what QEMU opens). */
  path: string;
  /**
   * A LUN that QEMU opens itself with its built-in initiator (qemu-block-extra)
   * instead of a file: `portal` "HOST:PORT", `target` the IQN, `lun` its number.
   * Such a disk has no image locking (that is file-only in QEMU).
   */
  iscsi?: IscsiLun;
  format: 'qcow2' | 'raw';
  readOnly?: boolean;
  /** virtio-blk (default) or an IDE CD-ROM for ISO images. */
  media?: 'disk' | 'cdrom';
  /** Boot order index (bootindex=) for disk/cdrom boots. */
  bootIndex?: number;
  serial?: string;
  /**
   * The PCIe root port (one of `QemuLaunchConfig.rootPorts`) a virtio disk sits on:
   * such a disk can be unplugged while QEMU runs. Without it the disk is built into
   * pcie.0 and stays until QEMU ends. CD-ROMs sit on AHCI and take none.
   */
  port?: number;
}

export interface IscsiLun {
  portal: string;
  target: string;
  lun: number;
  /** The IQN QEMU logs in as (QEMU's default is one name for every QEMU). */
  initiatorName?: string;
}

export interface HostForward {
  protocol: 'tcp' | 'udp';
  /** Always a loopback address until real networks land. */
  hostAddress: string;
  hostPort: number;
  guestPort: number;
}

export interface NicConfig {
  id: string;
  mac: string;
  /**
   * `user`: QEMU user-mode networking (slirp) with loopback forwards; `tap`: an
   * existing tap (`ifname`) on a Drover network's bridge, made by the agent's
   * networks (docs/networks.md), opened with script=no.
   */
  mode: 'user' | 'tap';
  ifname?: string;
  hostForwards: HostForward[];
  /** The PCIe root port the NIC sits on (see `DiskConfig.port`). */
  port?: number;
}

export type BootConfig =
  | { kind: 'kernel'; kernel: string; initrd?: string; cmdline: string }
  | { kind: 'disk' }
  | { kind: 'cdrom' };

export interface QemuLaunchConfig {
  /** VM name, shown in `-name` and the process list. */
  name: string;
  uuid: string;
  accel: Accelerator;
  cpus: number;
  memoryMiB: number;
  /** `-cpu` model, e.g. `qemu64`, `max`; `host` only with KVM. */
  cpuModel: string;
  machine?: string;
  disks: DiskConfig[];
  nics: NicConfig[];
  /**
   * PCIe root ports to create, by index (`rp<index>`, at a fixed address per index): the
   * slots of the devices given a `port`, and free slots for devices hot-plugged later
   * (`hotplug.ts`). q35 has no hotplug on pcie.0.
   */
  rootPorts?: readonly number[];
  boot: BootConfig;
  /** Unix socket paths; QEMU creates them (server=on,wait=off). */
  qmpSocket: string;
  serialSocket: string;
  /** File that receives everything written to the serial port, client or not. */
  serialLog: string;
  vncSocket?: string;
  pidFile: string;
  /** Start with CPUs stopped (`-S`). */
  startPaused?: boolean;
  /** `-incoming defer`, for restore and migration destinations. */
  incomingDefer?: boolean;
  /** Full seccomp lockdown; safe because QEMU never spawns nor changes uid in our set-up. */
  sandbox?: boolean;
}
