import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The console is built into console/dist, which the cloud serves at `/` (src/cloud/api/console.ts).
// Everything is bundled: nothing is fetched from another origin at run time (the cloud's CSP forbids it).
export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    sourcemap: false,
    // Inline nothing as data: URLs except tiny images; scripts and styles stay files (CSP 'self').
    assetsInlineLimit: 2048,
    target: 'es2022',
  },
  server: {
    // `npm run console:dev`: the dev server proxies the API to a running cloud.
    proxy: { '/api': process.env.EW_CLOUD_URL ?? 'http://127.0.0.1:8080' },
  },
});
