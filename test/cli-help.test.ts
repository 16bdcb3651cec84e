import { it } from 'node:test';
import assert from 'node:assert/strict';
import type { Command } from 'commander';
import { buildProgram } from '../src/cli/main.ts';

/** Every command a user can run explains itself with at least one example. */
it('every command has --help with a description and an example', () => {
  const missing: string[] = [];
  const walk = (cmd: Command, path: string[]) => {
    for (const c of cmd.commands) {
      const name = [...path, c.name()].join(' ');
      if (c.commands.length) {
        walk(c, [...path, c.name()]);
        continue;
      }
      let out = '';
      c.configureOutput({
        writeOut: (s) => {
          out += s;
        },
        writeErr: (s) => {
          out += s;
        },
      });
      c.outputHelp();
      if (!c.description()) missing.push(`${name}: no description`);
      if (!/Examples?:/.test(out)) missing.push(`${name}: no example`);
    }
  };
  walk(buildProgram(), []);
  assert.deepEqual(missing, []);
});
