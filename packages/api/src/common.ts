import { Type, type Static } from 'typebox';

/** Names of VMs, pools, volumes and snapshots: safe in paths, argv and nft alike. */
export const Name = Type.String({
  minLength: 1,
  maxLength: 63,
  pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$',
  description: 'Letters, digits, ".", "_" and "-"; starts with a letter or digit; at most 63 characters',
});

/** Volume file names: like Name but longer, and never "." / ".." tricks (pattern forbids a leading dot). */
export const VolumeName = Type.String({
  minLength: 1,
  maxLength: 128,
  pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$',
  description: 'File name inside the pool; the extension decides the format (.qcow2 → qcow2, anything else → raw)',
});

export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String(),
      message: Type.String(),
      details: Type.Record(Type.String(), Type.Unknown()),
    }),
  },
  { description: 'Every error answer has this shape' },
);
export type ErrorBody = Static<typeof ErrorBody>;

export const VolumeRef = Type.Object(
  { pool: Name, volume: VolumeName },
  { additionalProperties: false, description: 'A volume inside a storage pool' },
);
export type VolumeRef = Static<typeof VolumeRef>;

export const MacAddress = Type.String({ pattern: '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$', description: 'Lower-case MAC, e.g. 52:54:00:12:34:56' });

/** A string that is one of `values`, as a plain JSON-schema enum (readable in OpenAPI). */
export function StringEnum<const T extends readonly string[]>(values: T, options: { description?: string } = {}) {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options });
}

/**
 * A cloud-init NoCloud seed: the agent writes these files to an ISO 9660 image
 * labelled `cidata` and attaches it read-only. Without metaData the agent writes
 * `instance-id: <VM id>` and `local-hostname: <VM name>`.
 */
export const CloudInit = Type.Object(
  {
    userData: Type.String({ maxLength: 65536, description: 'The user-data file: a script starting with "#!" or a "#cloud-config" document (at most 64 KiB)' }),
    metaData: Type.Optional(Type.String({ maxLength: 16384, description: 'The meta-data file (YAML); default: instance-id = VM id, local-hostname = VM name' })),
    networkConfig: Type.Optional(Type.String({ maxLength: 16384, description: 'The network-config file (YAML, network config version 1 or 2); omitted when absent' })),
  },
  { additionalProperties: false },
);
export type CloudInit = Static<typeof CloudInit>;
