import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The console is served by drover-manager from packages/web/dist (config `webRoot`).
// `vite` (the dev server) proxies the API to a manager on 127.0.0.1:8300.
export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  plugins: [react()],
  resolve: { conditions: ['drover-source'] },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: true,
    chunkSizeWarningLimit: 1024,
    // The timing report is noise in setup's output.
    rolldownOptions: { checks: { pluginTimings: false } },
  },
  server: {
    host: '127.0.0.1',
    proxy: { '/api': { target: 'http://127.0.0.1:8300', ws: true } },
  },
});
