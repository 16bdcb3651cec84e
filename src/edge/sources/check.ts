import { EwError } from '../../contracts/errors.ts';
import type { AppManifest } from '../../contracts/manifest.ts';
import { REGISTERS } from './modbus-codec.ts';

/**
 * Push-time checks of streams fed by an industrial source (the shape is checked by zod; this
 * checks what spans fields): every schema field is one the source reads (or the event-time field
 * it stamps), Modbus bit tables hold bools, and multi-register values fit the address space.
 */
export function checkStreamSources(m: AppManifest): void {
  m.spec.streams.forEach((s, i) => {
    const src = s.source;
    if (!src) return;
    const kind = 'opcua' in src ? 'opcua' : 'modbus';
    const fields = 'opcua' in src ? src.opcua.fields : src.modbus.fields;
    if (s.timestamp && s.timestamp in fields) {
      throw new EwError(
        'INVALID_MANIFEST',
        `stream ${s.name}: "${s.timestamp}" is both the event-time field (stamped by the source) and a field the source reads; name them apart`,
        { path: `spec.streams[${i}].timestamp` },
      );
    }
    for (const f of Object.keys(s.schema ?? {})) {
      if (!(f in fields) && f !== s.timestamp) {
        throw new EwError(
          'INVALID_MANIFEST',
          `stream ${s.name}'s schema names field "${f}", which its ${kind} source does not read (it reads ${Object.keys(fields).join(', ')}); map it in source.${kind}.fields or remove it`,
          { path: `spec.streams[${i}].schema.${f}` },
        );
      }
    }
    if ('modbus' in src) {
      for (const [name, f] of Object.entries(src.modbus.fields)) {
        const path = `spec.streams[${i}].source.modbus.fields.${name}`;
        const bits = f.table === 'coil' || f.table === 'discrete';
        if (bits && f.type !== undefined && f.type !== 'bool')
          throw new EwError('INVALID_MANIFEST', `field ${name}: a ${f.table} holds one bit: type bool (or leave type out)`, {
            path: `${path}.type`,
          });
        if (!bits && f.type === 'bool')
          throw new EwError(
            'INVALID_MANIFEST',
            `field ${name}: a ${f.table} register holds a number: use int16, uint16, int32, uint32, float32 or float64`,
            { path: `${path}.type` },
          );
        const n = bits ? 1 : REGISTERS[f.type ?? 'uint16'];
        if (f.address + n > 65_536)
          throw new EwError(
            'INVALID_MANIFEST',
            `field ${name}: a ${f.type ?? 'uint16'} at address ${f.address} runs past the last Modbus address 65535`,
            { path: `${path}.address` },
          );
      }
    }
  });
}
