import type { CloudInitText } from '../media.js';

/** Textareas for user-data, meta-data and network-config. */
export function CloudInitFields({ id, value, onChange, disabled }: { id: string; value: CloudInitText; onChange: (next: CloudInitText) => void; disabled?: boolean }) {
  return (
    <>
      <label htmlFor={`${id}-user-data`}>User data</label>
      <textarea
        id={`${id}-user-data`}
        className="code"
        rows={6}
        maxLength={65536}
        spellCheck={false}
        disabled={disabled}
        placeholder={'#cloud-config\npackages: [nginx]'}
        value={value.userData}
        onChange={(e) => onChange({ ...value, userData: e.target.value })}
        aria-describedby={`${id}-user-data-help`}
      />
      <p id={`${id}-user-data-help`} className="help">
        A <code>#cloud-config</code> document or a script starting with <code>#!</code>, at most 64 KiB.
      </p>
      <label htmlFor={`${id}-meta-data`}>Meta data</label>
      <textarea
        id={`${id}-meta-data`}
        className="code"
        rows={3}
        maxLength={16384}
        spellCheck={false}
        disabled={disabled}
        placeholder={'instance-id: web-1-v2\nlocal-hostname: web-1'}
        value={value.metaData}
        onChange={(e) => onChange({ ...value, metaData: e.target.value })}
        aria-describedby={`${id}-meta-data-help`}
      />
      <p id={`${id}-meta-data-help`} className="help">
        Optional YAML. Without it the seed holds <code>instance-id</code> = the VM's id and <code>local-hostname</code> = its name. A guest runs its user data once per instance-id.
      </p>
      <label htmlFor={`${id}-network-config`}>Network config</label>
      <textarea
        id={`${id}-network-config`}
        className="code"
        rows={2}
        maxLength={16384}
        spellCheck={false}
        disabled={disabled}
        value={value.networkConfig}
        onChange={(e) => onChange({ ...value, networkConfig: e.target.value })}
        aria-describedby={`${id}-network-config-help`}
      />
      <p id={`${id}-network-config-help`} className="help">
        Optional YAML (network config version 1 or 2).
      </p>
    </>
  );
}
