import { createServer } from 'node:net';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { encodeValue, type Encoding } from '../edge/sources/modbus-codec.ts';
import { quietOpcua } from '../edge/sources/opcua-quiet.ts';
import { modbusSerial } from '../edge/sources/modbus.ts';

/**
 * Machines that speak the real protocols, for the demo, the tests and the benchmark: an OPC UA
 * server (node-opcua) exposing a small machine model, and a Modbus TCP server (modbus-serial)
 * with a register map. Both run the same little physics: the spindle follows its setpoint,
 * temperature and vibration follow the spindle, and a worn bearing (`setWear`) makes vibration
 * grow — which is what the predictive-maintenance variant watches for.
 */

/** A free TCP port on loopback (node-opcua advertises its port in its endpoints, so it needs a real one). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, host, () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
}

/**
 * The machine's state and physics, shared by both simulators. Pure: `step(dtMs, rand)` advances
 * it. Vibration (rms, mm/s), kurtosis and peak frequency follow the predictive-maintenance
 * template's healthy machines (src/sim/profiles.ts) at the nominal 1,200 rpm; a worn bearing
 * (`wear` 0..1) raises all three, and more so at speed — so lowering the setpoint calms a worn
 * machine, which is the loop the template's PLC variant closes.
 */
export class MachineModel {
  spindleSpeed = 1200;
  setpoint = 1200;
  temperature = 41;
  vibration = 0.9;
  kurtosis = 3;
  peakHz = 120;
  wear = 0;
  running = true;
  step(dtMs: number, rand: () => number = Math.random): void {
    const k = Math.min(1, dtMs / 2000);
    this.spindleSpeed += (this.setpoint - this.spindleSpeed) * k + (rand() - 0.5) * 4;
    const load = Math.max(0, this.spindleSpeed / 1200);
    const w = this.wear * load ** 2;
    const hot = 30 + this.spindleSpeed / 100 + this.wear * 12;
    this.temperature += (hot - this.temperature) * Math.min(1, dtMs / 10_000) + (rand() - 0.5) * 0.05;
    this.vibration = 0.9 + 0.6 * w + Math.abs(rand() - 0.5) * 0.12;
    this.kurtosis = 3 + 4 * w ** 2 + (rand() - 0.5) * 0.3;
    this.peakHz = 120 + 35 * w + (rand() - 0.5) * 3;
  }
}

export const OPCUA_NODES = {
  spindleSpeed: 'ns=1;s=Machine1.SpindleSpeed',
  temperature: 'ns=1;s=Machine1.Temperature',
  vibration: 'ns=1;s=Machine1.Vibration',
  kurtosis: 'ns=1;s=Machine1.Kurtosis',
  peakHz: 'ns=1;s=Machine1.PeakHz',
  setpoint: 'ns=1;s=Machine1.Setpoint',
  running: 'ns=1;s=Machine1.Running',
  partCount: 'ns=1;s=Machine1.PartCount',
} as const;

export interface OpcuaSimOptions {
  /** The machine to expose (shared with a Modbus simulator). Default: its own. */
  model?: MachineModel;
  port?: number;
  host?: string;
  /** Folder for the server's PKI (certificate, trust list). Required: node-opcua would use ~/.config. */
  pkiDir: string;
  /** Update the model every tickMs (0: never by itself; tests set values by hand). Default 100. */
  tickMs?: number;
  /** Extra Double variables ns=1;s=Bench.V{i} that change every tick (the benchmark's 1,000 items). */
  benchVariables?: number;
  /** Accept these users (username → password) besides anonymous. */
  users?: Record<string, string>;
  /** Refuse anonymous sessions. Default false. */
  noAnonymous?: boolean;
}

/** An OPC UA server exposing Machine1 (spindle speed, temperature, vibration, setpoint, running, part count). */
export class OpcuaMachineSim {
  readonly model: MachineModel;
  /** Every value written by a client to a node: what a test checks after a rule acts. */
  readonly writes: { node: string; value: unknown; at: number }[] = [];
  private server?: import('node-opcua').OPCUAServer;
  private vars = new Map<string, import('node-opcua').UAVariable>();
  private bench: import('node-opcua').UAVariable[] = [];
  private timer?: NodeJS.Timeout;
  /** Times the model was published (each changes every bench variable once). */
  ticks = 0;
  port = 0;

  constructor(private readonly o: OpcuaSimOptions) {
    this.model = o.model ?? new MachineModel();
  }

  get endpoint(): string {
    return `opc.tcp://${this.o.host ?? '127.0.0.1'}:${this.port}`;
  }

  async start(): Promise<void> {
    quietOpcua();
    const ua = await import('node-opcua');
    this.uaMod = ua;
    if (!this.port) this.port = this.o.port || (await freePort());
    mkdirSync(this.o.pkiDir, { recursive: true });
    const certificateManager = new ua.OPCUACertificateManager({
      rootFolder: join(this.o.pkiDir, 'server'),
      automaticallyAcceptUnknownCertificate: true,
    });
    const users = this.o.users ?? {};
    const server = new ua.OPCUAServer({
      port: this.port,
      hostname: this.o.host ?? '127.0.0.1',
      nodeset_filename: [ua.nodesets.standard],
      serverCertificateManager: certificateManager,
      allowAnonymous: !this.o.noAnonymous,
      // Like a real PLC: an open endpoint and a signed-and-encrypted one. Basic256Sha256 also
      // encrypts user passwords sent over the open endpoint.
      securityModes: [ua.MessageSecurityMode.None, ua.MessageSecurityMode.Sign, ua.MessageSecurityMode.SignAndEncrypt],
      securityPolicies: [ua.SecurityPolicy.None, ua.SecurityPolicy.Basic256Sha256],
      userManager: { isValidUser: (u: string, p: string) => users[u] !== undefined && users[u] === p },
      buildInfo: { productName: 'Edgeweave machine simulator', manufacturerName: 'Edgeweave' },
      // The simulator is a lab machine: no limits to trip a benchmark with 1,000 items.
      serverCapabilities: { maxSessions: 50 } as never,
    });
    await server.initialize();
    const space = server.engine.addressSpace!;
    const ns = space.getOwnNamespace();
    const machine = ns.addObject({ organizedBy: space.rootFolder.objects, browseName: 'Machine1' });
    const m = this.model;
    const add = (
      key: keyof typeof OPCUA_NODES,
      dataType: 'Double' | 'Boolean' | 'UInt32',
      writable: boolean,
      get: () => number | boolean,
    ) => {
      const v = ns.addVariable({
        componentOf: machine,
        browseName: key[0]!.toUpperCase() + key.slice(1),
        nodeId: OPCUA_NODES[key].replace('ns=1;', ''),
        dataType,
        accessLevel: writable ? 'CurrentRead | CurrentWrite' : 'CurrentRead',
        userAccessLevel: writable ? 'CurrentRead | CurrentWrite' : 'CurrentRead',
      });
      v.setValueFromSource(new ua.Variant({ dataType: ua.DataType[dataType], value: get() }));
      this.vars.set(key, v);
      return v;
    };
    add('spindleSpeed', 'Double', false, () => m.spindleSpeed);
    add('temperature', 'Double', false, () => m.temperature);
    add('vibration', 'Double', false, () => m.vibration);
    add('kurtosis', 'Double', false, () => m.kurtosis);
    add('peakHz', 'Double', false, () => m.peakHz);
    add('running', 'Boolean', false, () => m.running);
    add('partCount', 'UInt32', false, () => 0);
    const sp = add('setpoint', 'Double', true, () => m.setpoint);
    sp.on('value_changed', (dv: import('node-opcua').DataValue) => {
      const value = dv.value.value as number;
      if (value !== m.setpoint) {
        m.setpoint = value;
        this.writes.push({ node: OPCUA_NODES.setpoint, value, at: Date.now() });
      }
    });
    const folder = ns.addObject({ organizedBy: space.rootFolder.objects, browseName: 'Bench' });
    for (let i = 0; i < (this.o.benchVariables ?? 0); i++) {
      const v = ns.addVariable({ componentOf: folder, browseName: `V${i}`, nodeId: `s=Bench.V${i}`, dataType: 'Double' });
      v.setValueFromSource(new ua.Variant({ dataType: ua.DataType.Double, value: 0 }));
      this.bench.push(v);
    }
    await server.start();
    this.server = server;
    const tick = this.o.tickMs ?? 100;
    if (tick > 0) {
      this.timer = setInterval(() => {
        this.model.step(tick);
        this.publish();
      }, tick);
      this.timer.unref();
    }
  }

  /** Pushes the model's values into the address space, stamped with `sourceTimestamp` (default now). */
  publish(sourceTimestamp = new Date()): void {
    if (!this.server) return;
    const ua = this.uaSync();
    const m = this.model;
    const set = (key: string, dataType: number, value: unknown) =>
      this.vars.get(key)?.setValueFromSource(new ua.Variant({ dataType, value }), ua.StatusCodes.Good, sourceTimestamp);
    set('spindleSpeed', ua.DataType.Double, m.spindleSpeed);
    set('temperature', ua.DataType.Double, m.temperature);
    set('vibration', ua.DataType.Double, m.vibration);
    set('kurtosis', ua.DataType.Double, m.kurtosis);
    set('peakHz', ua.DataType.Double, m.peakHz);
    set('running', ua.DataType.Boolean, m.running);
    this.ticks++;
    for (let i = 0; i < this.bench.length; i++)
      this.bench[i]!.setValueFromSource(
        new ua.Variant({ dataType: ua.DataType.Double, value: this.ticks + i / 1e4 }),
        ua.StatusCodes.Good,
        sourceTimestamp,
      );
  }

  private uaMod?: typeof import('node-opcua');
  private uaSync(): typeof import('node-opcua') {
    return this.uaMod!;
  }

  /** Sets one variable (by model key) with an explicit source timestamp: deterministic tests. */
  set(key: 'spindleSpeed' | 'temperature' | 'vibration' | 'kurtosis' | 'peakHz', value: number, sourceTimestamp: Date): void {
    this.model[key] = value;
    this.publish(sourceTimestamp);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const s = this.server;
    this.server = undefined;
    this.vars.clear();
    this.bench = [];
    if (s) await s.shutdown(0);
  }

  /** Stops and starts again on the same port (a PLC reboot): sessions and subscriptions are gone. */
  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

/** The endpoints the template's PLC variant names (edgeweave.plc.yaml): the demo's simulators on their usual ports. */
export const TEMPLATE_ENDPOINTS = { opcua: 'opc.tcp://127.0.0.1:4840', modbus: 'tcp://127.0.0.1:5020' } as const;

/** A manifest (as parsed YAML) with the template's endpoints pointed at running simulators. */
export function pointAtSimulators<T>(manifest: T, to: { opcua: string; modbus: string }): T {
  const text = JSON.stringify(manifest).replaceAll(TEMPLATE_ENDPOINTS.opcua, to.opcua).replaceAll(TEMPLATE_ENDPOINTS.modbus, to.modbus);
  return JSON.parse(text) as T;
}

/** Where the Modbus simulator keeps Machine1 (zero-based addresses). */
export const MODBUS_MAP = {
  /** Input registers: spindle speed (float32, 0–1), temperature ×10 (int16, 2), vibration (float32, 3–4), kurtosis (float32, 5–6), peak Hz ×10 (uint16, 7). */
  spindleSpeed: { table: 'input', address: 0, type: 'float32' },
  temperature: { table: 'input', address: 2, type: 'int16', scale: 0.1 },
  vibration: { table: 'input', address: 3, type: 'float32' },
  kurtosis: { table: 'input', address: 5, type: 'float32' },
  peakHz: { table: 'input', address: 7, type: 'uint16', scale: 0.1 },
  /** Holding registers: setpoint (uint16 rpm, 10), part count (uint32, 11–12). */
  setpoint: { table: 'holding', address: 10, type: 'uint16' },
  partCount: { table: 'holding', address: 11, type: 'uint32' },
  /** Coil 0: running. Discrete input 0: door closed. */
  running: { table: 'coil', address: 0, type: 'bool' },
  doorClosed: { table: 'discrete', address: 0, type: 'bool' },
} as const;

export interface ModbusSimOptions {
  /** The machine to expose; shared with an OPC UA simulator, that one steps it. Default: its own. */
  model?: MachineModel;
  host?: string;
  port?: number;
  /** The unit id it answers (others get no answer, like a real gateway). Default 1. */
  unit?: number;
  /** Registers per table (addresses past it answer "illegal data address"). Default 1,000. */
  size?: number;
  tickMs?: number;
}

/** A Modbus TCP server with Machine1's register map (MODBUS_MAP) and `size` registers per table. */
export class ModbusMachineSim {
  readonly model: MachineModel;
  readonly holding: Uint16Array;
  readonly input: Uint16Array;
  readonly coils: boolean[];
  readonly discrete: boolean[];
  readonly writes: { table: 'holding' | 'coil'; address: number; value: number | boolean; at: number }[] = [];
  private server?: import('modbus-serial').ServerTCP;
  private timer?: NodeJS.Timeout;
  port = 0;

  constructor(private readonly o: ModbusSimOptions = {}) {
    this.model = o.model ?? new MachineModel();
    const n = o.size ?? 1000;
    this.holding = new Uint16Array(n);
    this.input = new Uint16Array(n);
    this.coils = new Array<boolean>(n).fill(false);
    this.discrete = new Array<boolean>(n).fill(false);
    this.publish();
  }

  get endpoint(): string {
    return `tcp://${this.o.host ?? '127.0.0.1'}:${this.port}`;
  }

  /** Writes a value into the register map with the big-endian default encoding (tests pick others). */
  put(table: 'holding' | 'input', address: number, value: number | boolean, e: Partial<Encoding> & { type: Encoding['type'] }): void {
    const words = encodeValue(value, { byteOrder: 'big', wordOrder: 'big', scale: 1, offset: 0, ...e });
    (table === 'holding' ? this.holding : this.input).set(words, address);
  }

  publish(): void {
    const m = this.model;
    this.put('input', 0, m.spindleSpeed, { type: 'float32' });
    this.put('input', 2, Math.round(m.temperature * 10), { type: 'int16' });
    this.put('input', 3, m.vibration, { type: 'float32' });
    this.put('input', 5, m.kurtosis, { type: 'float32' });
    this.put('input', 7, Math.max(0, Math.round(m.peakHz * 10)), { type: 'uint16' });
    this.holding[10] = Math.max(0, Math.min(0xffff, Math.round(m.setpoint)));
    this.coils[0] = m.running;
    this.discrete[0] = true;
  }

  async start(): Promise<void> {
    const { ServerTCP } = modbusSerial();
    const size = this.holding.length;
    const unit = this.o.unit ?? 1;
    const check = (addr: number, n = 1) => {
      if (addr < 0 || addr + n > size) throw Object.assign(new Error(`illegal data address ${addr}`), { modbusErrorCode: 0x02 });
    };
    const vector = {
      getCoil: (addr: number) => {
        check(addr);
        return this.coils[addr]!;
      },
      getDiscreteInput: (addr: number) => {
        check(addr);
        return this.discrete[addr]!;
      },
      getInputRegister: (addr: number) => {
        check(addr);
        return this.input[addr]!;
      },
      getHoldingRegister: (addr: number) => {
        check(addr);
        return this.holding[addr]!;
      },
      getMultipleInputRegisters: (addr: number, n: number) => {
        check(addr, n);
        return [...this.input.subarray(addr, addr + n)];
      },
      getMultipleHoldingRegisters: (addr: number, n: number) => {
        check(addr, n);
        return [...this.holding.subarray(addr, addr + n)];
      },
      setCoil: (addr: number, value: boolean) => {
        check(addr);
        this.coils[addr] = value;
        this.writes.push({ table: 'coil', address: addr, value, at: Date.now() });
        if (addr === MODBUS_MAP.running.address) this.model.running = value;
      },
      setRegister: (addr: number, value: number) => {
        check(addr);
        this.holding[addr] = value;
        this.writes.push({ table: 'holding', address: addr, value, at: Date.now() });
        if (addr === MODBUS_MAP.setpoint.address) this.model.setpoint = value;
      },
      setRegisterArray: (addr: number, values: number[]) => {
        check(addr, values.length);
        this.holding.set(values, addr);
        values.forEach((value, i) => {
          this.writes.push({ table: 'holding', address: addr + i, value, at: Date.now() });
        });
        if (addr <= MODBUS_MAP.setpoint.address && addr + values.length > MODBUS_MAP.setpoint.address)
          this.model.setpoint = this.holding[MODBUS_MAP.setpoint.address]!;
      },
    };
    const reuse = this.port;
    // modbus-serial treats port 0 as "use 502"; the string "0" reaches net.listen as port 0.
    const server = new ServerTCP(vector, {
      host: this.o.host ?? '127.0.0.1',
      port: (reuse || (this.o.port ?? '0')) as number,
      unitID: unit,
    });
    const tcp = (server as unknown as { _server: import('node:net').Server })._server;
    await new Promise<void>((resolve, reject) => {
      server.on('initialized', () => resolve());
      (server as unknown as import('node:events').EventEmitter).on('serverError', (e: Error) => reject(e));
    });
    this.port = (tcp.address() as { port: number }).port;
    this.server = server;
    const tick = this.o.tickMs ?? 100;
    if (tick > 0) {
      this.timer = setInterval(() => {
        if (!this.o.model) this.model.step(tick);
        this.publish();
      }, tick);
      this.timer.unref();
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    // Close open client sockets too: a stopped PLC drops its connections.
    for (const sock of s.socks.keys()) sock.destroy();
    await new Promise<void>((r) => s.close(() => r()));
  }
}
