import type { ModbusSourceSpec, ModbusTable } from '../../contracts/industrial.ts';
import { decodeValue, planReads, REGISTERS, type Encoding, type ReadBlock } from './modbus-codec.ts';
import { hostPort, SourceBase, type SourceDeps } from './source.ts';

import { createRequire } from 'node:module';
type Client = InstanceType<typeof import('modbus-serial').default>;

/** modbus-serial is CommonJS: its export is the client class, with ServerTCP hung on it. */
export const modbusSerial = () =>
  createRequire(import.meta.url)('modbus-serial') as { new (): Client; ServerTCP: typeof import('modbus-serial').ServerTCP };

/** A Modbus failure with the stable code it maps to. */
export class ModbusFailure extends Error {
  constructor(
    readonly code: 'SOURCE_UNREACHABLE' | 'SOURCE_ADDRESS_INVALID' | 'WRITE_FAILED',
    message: string,
  ) {
    super(message);
  }
}

/** Turns modbus-serial's errors into what an operator can act on. */
export function classify(e: unknown, what: string, endpoint: string, unit: number): ModbusFailure {
  const err = e as Error & { modbusCode?: number; errno?: string; code?: string };
  if (err.modbusCode === 2)
    return new ModbusFailure(
      'SOURCE_ADDRESS_INVALID',
      `${what}: the device at ${endpoint} (unit ${unit}) answered "illegal data address": the register or coil is out of its range; check the register map`,
    );
  if (err.modbusCode !== undefined)
    return new ModbusFailure(
      'SOURCE_ADDRESS_INVALID',
      `${what}: the device at ${endpoint} (unit ${unit}) answered Modbus exception ${err.modbusCode}: ${err.message}`,
    );
  if (err.name === 'TransactionTimedOutError')
    return new ModbusFailure(
      'SOURCE_UNREACHABLE',
      `${what}: no answer from ${endpoint} (unit ${unit}) in time; check the unit id (a gateway ignores unknown units) and the network`,
    );
  return new ModbusFailure('SOURCE_UNREACHABLE', `${what}: ${endpoint}: ${err.message || err.code || String(e)}`);
}

/** One TCP connection to a Modbus device (modbus-serial's client), opened lazily. */
export class ModbusConnection {
  private client?: Client;
  constructor(
    readonly endpoint: string,
    readonly unit: number,
    private readonly timeoutMs: number,
  ) {}

  get open(): boolean {
    return this.client?.isOpen ?? false;
  }

  async connect(): Promise<void> {
    const ModbusRTU = modbusSerial();
    const { host, port } = hostPort(this.endpoint, 502);
    const c = new ModbusRTU();
    // A host that drops SYNs would hold connectTCP for the OS's timeout (minutes): bound it.
    const limit = Math.max(this.timeoutMs, 3000);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        c.connectTCP(host, { port }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`connect timed out after ${limit} ms`)), limit);
        }),
      ]);
    } catch (e) {
      if (c.isOpen) c.close(() => {});
      else (c as unknown as { _port?: { _client?: { destroy(): void } } })._port?._client?.destroy();
      throw classify(e, 'connect', this.endpoint, this.unit);
    } finally {
      clearTimeout(timer);
    }
    c.setID(this.unit);
    c.setTimeout(this.timeoutMs);
    // A dropped socket is found by the next request; the 'error' event must not go unhandled.
    (c as unknown as { on?: (ev: string, fn: () => void) => void }).on?.('error', () => {});
    this.client = c;
  }

  async read(table: ModbusTable, address: number, count: number): Promise<number[] | boolean[]> {
    const c = this.client;
    if (!c?.isOpen) throw new ModbusFailure('SOURCE_UNREACHABLE', `${this.endpoint}: not connected`);
    try {
      switch (table) {
        case 'coil':
          return (await c.readCoils(address, count)).data.slice(0, count);
        case 'discrete':
          return (await c.readDiscreteInputs(address, count)).data.slice(0, count);
        case 'holding':
          return (await c.readHoldingRegisters(address, count)).data;
        case 'input':
          return (await c.readInputRegisters(address, count)).data;
      }
    } catch (e) {
      throw classify(e, `read ${table} ${address}+${count}`, this.endpoint, this.unit);
    }
  }

  async writeRegisters(address: number, words: number[]): Promise<void> {
    const c = this.client;
    if (!c?.isOpen) throw new ModbusFailure('SOURCE_UNREACHABLE', `${this.endpoint}: not connected`);
    try {
      // FC 6 for one register (what the simplest PLCs implement), FC 16 for more.
      if (words.length === 1) await c.writeRegister(address, words[0]!);
      else await c.writeRegisters(address, words);
    } catch (e) {
      throw classify(e, `write holding ${address}`, this.endpoint, this.unit);
    }
  }

  async writeCoil(address: number, value: boolean): Promise<void> {
    const c = this.client;
    if (!c?.isOpen) throw new ModbusFailure('SOURCE_UNREACHABLE', `${this.endpoint}: not connected`);
    try {
      await c.writeCoil(address, value);
    } catch (e) {
      throw classify(e, `write coil ${address}`, this.endpoint, this.unit);
    }
  }

  async close(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    if (c?.isOpen) await new Promise<void>((r) => c.close(() => r()));
  }
}

interface Field {
  name: string;
  table: ModbusTable;
  address: number;
  type: Encoding['type'];
  enc: Encoding;
}

/** The fields of a spec with every default filled in. */
export function modbusFields(spec: ModbusSourceSpec): Field[] {
  return Object.entries(spec.fields).map(([name, f]) => {
    const bits = f.table === 'coil' || f.table === 'discrete';
    const type = bits ? 'bool' : (f.type ?? 'uint16');
    return {
      name,
      table: f.table,
      address: f.address,
      type,
      enc: {
        type,
        byteOrder: f.byteOrder ?? spec.byteOrder,
        wordOrder: f.wordOrder ?? spec.wordOrder,
        scale: f.scale ?? 1,
        offset: f.offset ?? 0,
      },
    };
  });
}

/**
 * Polls a Modbus TCP device: every `intervalMs`, the register map is read in as few requests as
 * the protocol allows (planReads), decoded (type, byte and word order, scale and offset) and sent
 * as one record stamped with the poll time. A failed request is retried `retries` times; a block
 * that still fails is reported (its fields are left out of the record) and the others are sent.
 * A lost connection is reopened with backoff. Polls never overlap: the next one is timed from
 * the end of the last.
 */
export class ModbusSource extends SourceBase {
  private conn?: ModbusConnection;
  private readonly blocks: ReadBlock<Field>[];
  private cancelPoll?: () => void;
  private polling?: Promise<void>;

  constructor(
    private readonly spec: ModbusSourceSpec,
    d: SourceDeps,
  ) {
    super('modbus', spec.endpoint, d);
    this.blocks = planReads(modbusFields(spec));
  }

  start(): void {
    void this.connect();
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    this.status.state = 'connecting';
    const conn = new ModbusConnection(this.spec.endpoint, this.spec.unit, this.spec.timeoutMs);
    try {
      await conn.connect();
    } catch (e) {
      const f = e as ModbusFailure;
      this.fail(f.code ?? 'SOURCE_UNREACHABLE', f.message);
      this.later(() => void this.connect());
      return;
    }
    if (this.closed) {
      await conn.close();
      return;
    }
    this.conn = conn;
    this.attempt = 0;
    this.status.state = 'connected';
    this.d.log.info(
      { app: this.d.app, stream: this.d.stream, endpoint: this.spec.endpoint, unit: this.spec.unit },
      'modbus source connected',
    );
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    this.cancelPoll = this.d.clock.setTimer(ms, () => {
      this.polling = this.poll();
    });
  }

  /** One poll; exported behaviour: a record with every field whose block was read. */
  private async poll(): Promise<void> {
    const conn = this.conn;
    if (!conn || this.closed) return;
    const started = this.d.clock.now();
    const rec: Record<string, unknown> = {};
    let values = 0;
    let lost = false;
    for (const b of this.blocks) {
      let data: number[] | boolean[] | undefined;
      let failure: ModbusFailure | undefined;
      for (let i = 0; i <= this.spec.retries && !this.closed; i++) {
        try {
          data = await conn.read(b.table, b.address, b.count);
          break;
        } catch (e) {
          failure = e as ModbusFailure;
          if (failure.code === 'SOURCE_ADDRESS_INVALID' || !conn.open) break; // retrying will not help
        }
      }
      if (!data) {
        if (failure) this.fail(failure.code, `${failure.message} (fields ${b.fields.map((f) => f.name).join(', ')})`);
        if (!conn.open) {
          lost = true;
          break;
        }
        continue;
      }
      for (const f of b.fields) {
        const at = f.address - b.address;
        if (f.table === 'coil' || f.table === 'discrete') rec[f.name] = Boolean(data[at]);
        else rec[f.name] = decodeValue((data as number[]).slice(at, at + REGISTERS[f.type]), f.enc);
        values++;
      }
    }
    if (this.closed) return;
    if (values > 0) this.send(rec, values, started);
    if (lost) {
      await conn.close();
      this.conn = undefined;
      this.later(() => void this.connect());
      return;
    }
    this.schedule(Math.max(0, this.spec.intervalMs - (this.d.clock.now() - started)));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.status.state = 'closed';
    this.cancelPoll?.();
    this.stopTimers();
    await this.polling?.catch(() => {});
    await this.conn?.close();
  }
}
