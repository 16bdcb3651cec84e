import type { FastifyInstance } from 'fastify';
import { Counter, Histogram, collectDefaultMetrics, type Registry } from 'prom-client';

/**
 * Metric helpers shared by the cloud and the site, named as Prometheus asks: counters end in
 * `_total` and only go up, durations are histograms in seconds (`promtool check metrics` is run
 * on both processes' output by test/metrics.test.ts).
 */

/**
 * prom-client's Node.js process metrics, less the three gauges it names like counters
 * (`nodejs_active_{handles,requests,resources}_total`, which promtool flags): their by-type
 * gauges without the suffix stay, and sum to the same figure.
 */
export function collectProcessMetrics(registry: Registry, prefix: string): void {
  collectDefaultMetrics({ register: registry, prefix });
  for (const m of ['active_handles_total', 'active_requests_total', 'active_resources_total'])
    registry.removeSingleMetric(`${prefix}nodejs_${m}`);
}

/**
 * A counter fed from a cumulative figure kept elsewhere (the outbox's dropped count, a rule's
 * records in). Each scrape adds what the figure grew by; a figure that went down was reset (a
 * rule restarted), and all of it is new, so the counter never goes down.
 */
export function counterFrom<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly L[],
  read: () => Iterable<{ labels: Record<L, string>; value: number }>,
): Counter<L> {
  const seen = new Map<string, number>();
  return new Counter<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      const now = new Set<string>();
      for (const { labels, value } of read()) {
        const key = labelNames.map((l) => labels[l]).join('\u0000');
        now.add(key);
        const last = seen.get(key) ?? 0;
        const grew = value >= last ? value - last : value;
        seen.set(key, value);
        // inc(labels, 0) too: a series exists from its first scrape, so rate() sees it start at 0.
        if (labelNames.length) this.inc(labels as never, grew);
        else this.inc(grew);
      }
      // Figures that went away (a rule removed) are forgotten, so this map stays bounded; if one
      // comes back its figure starts again from 0 and all of it is new.
      for (const k of seen.keys()) if (!now.has(k)) seen.delete(k);
    },
  });
}

/**
 * `{prefix}_http_request_duration_seconds{method, route, status}`: every HTTP request's time to
 * the response, by route template (`/api/v1/sites/:id`, never the raw URL, so the label set
 * stays bounded) and status code. Requests no route matched are `route="unmatched"`.
 */
export function installHttpMetrics(app: FastifyInstance, registry: Registry, prefix: string): void {
  const h = new Histogram({
    name: `${prefix}_http_request_duration_seconds`,
    help: 'HTTP request duration by route template and status code',
    labelNames: ['method', 'route', 'status'],
    registers: [registry],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  });
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions?.url ?? 'unmatched';
    h.observe(
      {
        method: req.method,
        route: reply.statusCode === 404 && !req.routeOptions?.url ? 'unmatched' : route,
        status: String(reply.statusCode),
      },
      reply.elapsedTime / 1000,
    );
  });
}
