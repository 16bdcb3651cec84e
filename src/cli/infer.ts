import { type Command, Option } from 'commander';

/**
 * `edgeweave infer` and `edgeweave chat`: the fleet's inference endpoints through the cloud's
 * router, with the routing controls as flags (they become the X-Edgeweave-* headers).
 * Declarations only; the implementation is ./commands/infer.ts, loaded when a command runs.
 */
function routingOptions(cmd: Command): Command {
  return cmd
    .option('--region <regions>', 'regions the data may be processed in (comma-separated)')
    .option('--data-class <class>', "the data class (one the app's residency policy declares)")
    .option('--site <site>', 'prefer this site (next to the data), if it is eligible')
    .option('--timeout <ms>', 'deadline across every attempt (ms)', (v) => Number(v));
}

export function registerInferCommands(program: Command): void {
  routingOptions(program.command('infer'))
    .description('Run an inference request on an endpoint through the cloud, which routes it to the right site (or the cloud fallback).')
    .argument('<endpoint>')
    .requiredOption('-i, --input <file>', 'an Open Inference Protocol request body (JSON), or - for stdin')
    .option('--version <v>', 'a deployed version of the endpoint')
    .option('--explain', 'also print why the request went where it did')
    .addOption(new Option('-o, --output <format>', 'table or json').choices(['table', 'json']).default('table'))
    .addHelpText(
      'after',
      '\nExamples:\n  $ edgeweave infer vibration-score --input request.json\n  $ edgeweave infer vibration-score -i request.json --region eu-west --data-class pii --explain -o json',
    )
    .action(async (endpoint: string, o) => (await import('./commands/infer.ts')).infer(endpoint, o));

  routingOptions(program.command('chat'))
    .description(
      'Chat with an LLM endpoint through the cloud (OpenAI-compatible, streamed). Reads lines from the terminal until an empty line or Ctrl-D.',
    )
    .argument('<endpoint>')
    .option('-m, --message <text>', 'send one message, print the answer and exit')
    .option('--system <text>', 'a system prompt')
    .option('--max-tokens <n>', 'at most this many tokens per answer', (v) => Number(v))
    .addHelpText(
      'after',
      '\nExamples:\n  $ edgeweave chat plant-assistant\n  $ edgeweave chat plant-assistant -m "Why did m2 raise an alert?" --region eu-west',
    )
    .action(async (endpoint: string, o) => (await import('./commands/infer.ts')).chat(endpoint, o));
}
