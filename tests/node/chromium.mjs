// Debian's Chromium driven by playwright-core, and the pusher-js web build pages load: shared by
// the browser test files.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
export const PUSHER_WEB = path.join(path.dirname(require.resolve('pusher-js/package.json')), 'dist/web/pusher.min.js');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];

/** Launches Chromium, failing clearly when it is not installed (./scripts/test installs it). */
export async function launchChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM} (./scripts/test installs Debian's chromium)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
}
