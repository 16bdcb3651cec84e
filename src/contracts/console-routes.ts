/**
 * The web console's pages, by the first segment of their path (`/sites/site-abc`, `/tokens`).
 * The cloud answers `/`, `/{page}` and `/{page}/…` with the console's index.html (the app then
 * routes in the browser), and nothing else: every other path keeps the API's own answers.
 * console/src/App.tsx maps each name to its page, so the two cannot drift apart.
 */
export const CONSOLE_PAGES = ['sites', 'apps', 'rollouts', 'live', 'endpoints', 'tokens'] as const;
export type ConsolePage = (typeof CONSOLE_PAGES)[number];
