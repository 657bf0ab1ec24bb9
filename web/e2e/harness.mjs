// Shared by the browser scenarios: launching Debian's Chromium through playwright-core
// (no downloaded browser), a page at 1440×900 that fails the scenario on any CSP
// violation, uncaught page error or dialog, and a plain HTTP client for "another client".
import { chromium } from 'playwright-core';

export const BASE = process.env.CC_BASE_URL;
if (!BASE) throw new Error('CC_BASE_URL is not set');

const EXECUTABLE = process.env.CC_CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Runs `body(page, browser)` in a fresh browser; closes it whatever happens. */
export async function withPage(body) {
  const browser = await chromium.launch({ executablePath: EXECUTABLE, args: ARGS, headless: true });
  const problems = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    page.on('console', (message) => {
      const text = message.text();
      if (message.type() === 'error' && /Content Security Policy|Refused to/i.test(text)) problems.push(`CSP: ${text}`);
    });
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('dialog', async (dialog) => {
      problems.push(`unexpected dialog: ${dialog.message()}`);
      await dialog.dismiss();
    });
    page.problems = problems;
    await body(page, browser, context);
    if (problems.length > 0) throw new Error(`the page reported problems:\n${problems.join('\n')}`);
  } finally {
    await browser.close();
  }
}

/** Opens the page and signs in with `key`; waits for the shell. */
export async function signIn(page, key, hash = '') {
  await page.goto(`${BASE}/${hash}`);
  await page.fill('#api-key', key);
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#role');
}

/** Another client: a JSON request with `key`. */
export async function api(key, method, path, body, headers = {}) {
  const response = await fetch(`${BASE}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return data;
}

/** Waits until `predicate()` is true (polling; a throw counts as false), or fails with `what`. */
export async function eventually(what, predicate, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  let last = null;
  for (;;) {
    try {
      if (await predicate()) return;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
