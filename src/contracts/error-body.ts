import { z } from 'zod';

/**
 * The JSON body of every API error (`ErrorBody` in errors.ts) as a response schema, so routes
 * that declare their error answers keep `path` and `pos` (a serializer drops undeclared fields).
 * Apart from errors.ts so that the CLI's start does not load zod for it.
 */
export const ErrorBodySchema = z.object({
  code: z.string(),
  message: z.string(),
  path: z.string().optional(),
  pos: z.object({ line: z.number().int(), col: z.number().int(), file: z.string().optional() }).optional(),
});
