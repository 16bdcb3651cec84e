/** The benchmark's baseline: a bare aedes broker on loopback (no auth, no ACL, no store). */
import { createServer } from 'node:net';
import { Aedes } from 'aedes';

const broker = await Aedes.createBroker();
const server = createServer(broker.handle);
server.listen(0, '127.0.0.1', () => {
  const port = (server.address() as { port: number }).port;
  process.stdout.write(`${JSON.stringify({ event: 'ready', url: `mqtt://127.0.0.1:${port}` })}\n`);
});
