/** The appliances Drover builds, with what their images promise. */

export type ApplianceName = 'web' | 'db' | 'counter';

export const APPLIANCE_NAMES: readonly ApplianceName[] = ['web', 'db', 'counter'];

export interface ApplianceSpec {
  version: string;
  description: string;
  minMemoryMiB: number;
  ports: { http?: number; db?: number };
  rootDiskMiB: number;
  /** Size of the empty data disk template (label drover-data); none if the appliance keeps state on its root disk. */
  dataDiskMiB?: number;
  /** Compile guest/counter.c into /usr/bin/drover-counter. */
  counterBinary?: boolean;
}

export const APPLIANCES: Readonly<Record<ApplianceName, ApplianceSpec>> = {
  web: {
    version: '1.0.0',
    description: 'busybox httpd on port 80: a page with the VM name and a value read live from a db appliance',
    minMemoryMiB: 96,
    ports: { http: 80 },
    rootDiskMiB: 64,
  },
  db: {
    version: '1.0.0',
    description: 'a line-protocol key/value service on port 7000, persisted on its data disk',
    minMemoryMiB: 96,
    ports: { db: 7000 },
    rootDiskMiB: 64,
    dataDiskMiB: 256,
  },
  counter: {
    version: '1.0.0',
    description: 'a generation counter at 10 per second on the serial console, persisted on its root disk',
    // 96 MiB plus the drover.dirty_mib buffer (at least 16 MiB when dirtying).
    minMemoryMiB: 128,
    ports: {},
    rootDiskMiB: 64,
    counterBinary: true,
  },
};

export function isApplianceName(value: string): value is ApplianceName {
  return (APPLIANCE_NAMES as readonly string[]).includes(value);
}

/** Kernel command line every appliance boots with; callers append `drover.*` keys. */
export const BASE_CMDLINE = 'console=ttyS0 quiet panic=-1';
export const READY_PATTERN = 'DROVER-READY';
export const PROBE_EXPECT = 'DROVER-PROBE-OK';
/** Printed by the live ISO (`buildLiveIso`) once it booted. */
export const LIVE_ISO_EXPECT = 'DROVER-LIVE-OK';
export const LIVE_ISO_VERSION = '1.0.0';
