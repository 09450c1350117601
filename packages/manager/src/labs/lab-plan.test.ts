import { describe, expect, it } from 'vitest';
import { rejectionOf } from '@drover/core';
import type { LabManifest } from '@drover/api';
import { allocateBlocks, guestCmdline, planLab, referencedPorts, startLevels, subnetInBlock, translateAddress } from './lab-plan.js';
import { labExamples } from './examples.js';

const base = (vms: LabManifest['vms'], networks: LabManifest['networks'] = [{ name: 'lan', kind: 'isolated', subnet: '10.10.0.0/24' }]): LabManifest => ({ name: 'm', networks, vms });

describe('lab plan', () => {
  it('orders VMs in start levels over dependsOn', () => {
    const { levels } = startLevels([
      { name: 'web', dependsOn: ['app'] },
      { name: 'db' },
      { name: 'app', dependsOn: ['db', 'cache'] },
      { name: 'cache' },
    ]);
    expect(levels).toEqual([['db', 'cache'], ['app'], ['web']]);
  });

  it('refuses a cycle, naming it', () => {
    const error = () => planLab('lab', base([{ name: 'a', image: 'web', dependsOn: ['c'] }, { name: 'b', image: 'web', dependsOn: ['a'] }, { name: 'c', image: 'web', dependsOn: ['b'] }]));
    expect(error).toThrow(/cycle: a → c → b → a/);
  });

  it('refuses unknown networks, groups, dependencies, addresses outside the subnet and duplicates', () => {
    expect(() => planLab('lab', base([{ name: 'a', image: 'web', nics: [{ network: 'wan' }] }]))).toThrow(/unknown network "wan"/);
    expect(() => planLab('lab', base([{ name: 'a', image: 'web', nics: [{ network: 'lan', securityGroups: ['x'] }] }]))).toThrow(/unknown security group "x"/);
    expect(() => planLab('lab', base([{ name: 'a', image: 'web', dependsOn: ['zz'] }]))).toThrow(/unknown VM "zz"/);
    expect(() => planLab('lab', base([{ name: 'a', image: 'web', nics: [{ network: 'lan', ip: '10.9.0.5' }] }]))).toThrow(/outside network "lan"/);
    expect(() => planLab('lab', base([{ name: 'a', image: 'web', nics: [{ network: 'lan', ip: '10.10.0.5' }] }, { name: 'b', image: 'web', nics: [{ network: 'lan', ip: '10.10.0.5' }] }]))).toThrow(/given to two VMs/);
    expect(() => planLab('lab', base([{ name: 'a', image: 'web' }, { name: 'a', image: 'db' }]))).toThrow(/two VMs named "a"/);
    expect(() => planLab('a-very-long-lab-name', base([{ name: 'a', image: 'web' }], [{ name: 'a-long-network-name', kind: 'isolated', subnet: '10.1.0.0/24' }]))).toThrow(/network names are 1 to 31/);
    expect(() => planLab('lab', base([{ name: 'a', image: 'web', healthCheck: { kind: 'serial', pattern: '(' } }]))).toThrow(/not a regular expression/);
  });

  it('gives each lab network its own /24 of the pool and moves addresses into it', async () => {
    expect(allocateBlocks('10.213.0.0/16', [], 2).map((b) => subnetInBlock('10.10.0.0/24', b))).toEqual(['10.213.0.0/24', '10.213.1.0/24']);
    expect(allocateBlocks('10.213.0.0/16', ['10.213.0.0/24', '10.213.2.0/24'], 2).map((b) => subnetInBlock('10.10.0.16/28', b))).toEqual(['10.213.1.16/28', '10.213.3.16/28']);
    expect(translateAddress('10.10.0.21', '10.213.5.0/24')).toBe('10.213.5.21');
    expect(await rejectionOf(Promise.resolve().then(() => allocateBlocks('10.213.0.0/23', ['10.213.0.0/24', '10.213.1.0/24'], 1)))).toMatchObject({ code: 'conflict' });
  });

  it('builds guest settings for Drover networks and for user networking', () => {
    const translate = (ip: string) => (ip.startsWith('10.10.0.') ? ip.replace('10.10.0.', '10.213.4.') : undefined);
    expect(guestCmdline('drover.db=10.10.0.11:7000 drover.dbkey=k', { vmName: 'l-web-1', mode: 'networks', translate, forwardOf: () => undefined, ownAddress: '10.213.4.21/24' })).toBe(
      'drover.name=l-web-1 drover.db=10.213.4.11:7000 drover.dbkey=k drover.ip=10.213.4.21/24',
    );
    expect(guestCmdline('drover.ip=10.10.0.21/24 drover.db=10.10.0.11:7000', { vmName: 'l-web-1', mode: 'user', translate, forwardOf: (ip, port) => (ip === '10.10.0.11' && port === 7000 ? 40001 : undefined) })).toBe(
      'drover.name=l-web-1 drover.db=10.0.2.2:40001 drover.net=user',
    );
  });

  it('ships web-db and pentest examples that plan cleanly', () => {
    const examples = labExamples();
    expect(examples.map((e) => e.name)).toEqual(['web-db', 'pentest']);
    const webDb = planLab('x', examples[0]!.manifest);
    expect(webDb.levels).toEqual([['db-1', 'db-2'], ['web-1', 'web-2']]);
    expect(referencedPorts(examples[0]!.manifest)).toEqual([{ vm: 'db-1', port: 7000 }, { vm: 'db-2', port: 7000 }]);
    expect(planLab('x', examples[1]!.manifest).levels).toEqual([['target-db'], ['target-old'], ['attacker']]);
  });
});
