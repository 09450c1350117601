import { startTestCluster, type TestCluster } from '@drover/manager/testing';
import { report, timed } from './stats.js';

/**
 * Lab deployment: the time to deploy the `web-db` example (2 dbs, then 2 web
 * servers once the dbs are healthy) until every health check passed, next to
 * starting the same 4 VMs one by one through the API (define, start, wait for
 * its DROVER-READY line, next) in the same run. The lab starts the VMs of a
 * level at once, so it should take less time; the target is at most 1.0× the
 * one-by-one time.
 *
 * Full: the 4-VM web-db lab. Smoke: one db and one web server, proves the
 * benchmark still runs. QEMU user networking (the lab's "user" mode) in both,
 * so only the orchestration differs.
 */
export async function runLabBench(options: { smoke: boolean }): Promise<boolean> {
  const cluster = await startTestCluster({ labs: { networkMode: 'user' } });
  try {
    const examples = (await cluster.api<{ items: Array<{ name: string; manifest: { name: string; vms: Array<{ name: string; image: string; memoryMiB?: number; dependsOn?: string[] }> } }> }>('GET', '/api/v1/lab-examples')).body.items;
    const manifest = structuredClone(examples.find((e) => e.name === 'web-db')!.manifest);
    if (options.smoke) {
      manifest.vms = manifest.vms.filter((v) => v.name === 'db-1' || v.name === 'web-1');
      for (const vm of manifest.vms) if (vm.dependsOn) vm.dependsOn = ['db-1'];
    }

    // Baseline: the same VMs, one after the other, each started and ready before the next.
    const baseline = await timed(async () => {
      for (const vm of manifest.vms) {
        const name = `one-${vm.name}`;
        await must(cluster, 'POST', '/api/v1/vms', { name, image: vm.image, memoryMiB: vm.memoryMiB ?? 96, cmdline: `drover.name=${name} drover.net=user` }, 201);
        await must(cluster, 'POST', `/api/v1/vms/${name}/start?wait=true`, {}, 200);
        await cluster.waitForSerial(name, /DROVER-READY/m, 300_000);
      }
    });
    for (const vm of manifest.vms) {
      await cluster.api('POST', `/api/v1/vms/one-${vm.name}/force-off?wait=true`, {});
      await cluster.api('DELETE', `/api/v1/vms/one-${vm.name}?wait=true`);
    }

    // The lab: one operation, until every health check passed.
    const lab = await timed(async () => {
      const op = await must(cluster, 'POST', '/api/v1/labs', { name: 'bench', manifest }, 202);
      const ended = await cluster.waitOp((op as { id: string }).id, 900_000);
      if (ended.state !== 'done') throw new Error(`the lab deploy ended ${ended.state}: ${JSON.stringify(ended.error)}`);
    });
    await cluster.api('DELETE', '/api/v1/labs/bench?wait=true');

    process.stdout.write(`lab deploy of ${manifest.vms.length} VMs (web-db${options.smoke ? ', smoke' : ''}): ${(lab.ms / 1000).toFixed(1)} s; one by one through the API: ${(baseline.ms / 1000).toFixed(1)} s; ratio ${(lab.ms / baseline.ms).toFixed(2)}\n`);
    const met = report({ name: 'lab deploy until healthy', figure: lab.ms, baseline: baseline.ms, baselineName: 'VMs one by one', unit: 'ms', maxRatio: 1.0 });
    return options.smoke ? true : met;
  } finally {
    await cluster.close();
  }
}

async function must(cluster: TestCluster, method: string, route: string, body: unknown, status: number): Promise<unknown> {
  const answer = await cluster.api(method, route, body);
  if (answer.status !== status) throw new Error(`${method} ${route}: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
}
