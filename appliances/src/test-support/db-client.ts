import { createConnection } from 'node:net';

// The db appliance's line protocol, for tests of the appliances and of the labs built from
// them (exported as `@drover/appliances/testing`).

/**
 * Sends db protocol lines to 127.0.0.1:port, then QUIT, and returns the
 * replies (without the final BYE).
 */
export function dbRequest(port: number, commands: readonly string[], timeoutMs = 10_000): Promise<string[]> {
  return new Promise((resolve, reject) => {
    let data = '';
    const socket = createConnection({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`db on port ${port}: no complete answer within ${timeoutMs} ms (got ${JSON.stringify(data)})`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${[...commands, 'QUIT'].join('\n')}\n`));
    socket.on('data', (d: string) => (data += d));
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      const lines = data.replace(/\r/g, '').split('\n').filter((l) => l.length > 0);
      if (lines[lines.length - 1] !== 'BYE') {
        reject(new Error(`db on port ${port}: connection closed early (got ${JSON.stringify(data)})`));
      } else {
        resolve(lines.slice(0, -1));
      }
    });
  });
}
