// The dashboard's browser scenarios, one per run: `node web/e2e/scenarios.mjs <name>`.
// tests/api/browser.rs starts a real service (PostgreSQL, NATS, workers) for each one,
// makes its keys and passes them in the environment:
//   CC_BASE_URL, CC_PROJECT, CC_KEY_READER, CC_KEY_WRITER, CC_KEY_AUDITOR, CC_KEY_ADMIN,
//   CC_KEY_ROOT (deployment-wide admin), CC_SCREENSHOTS (folder, for `screenshots`).
// Exit status 0 means the scenario passed.
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { BASE, api, eventually, signIn, withPage } from './harness.mjs';

const env = process.env;
const PROJECT = Number(env.CC_PROJECT || 1);
const key = (role) => {
  const value = env[`CC_KEY_${role.toUpperCase()}`];
  if (!value) throw new Error(`CC_KEY_${role.toUpperCase()} is not set`);
  return value;
};
const unique = () => Math.random().toString(36).slice(2, 8);
const createTechnology = (role, body) =>
  api(key(role), 'POST', '/api/v1/technologies', { project_id: PROJECT, ...body });

const scenarios = {
  /** A bad key is refused at sign-in; a good one enters; a 401 later returns to sign-in. */
  async sign_in() {
    await withPage(async (page) => {
      await page.goto(`${BASE}/`);
      await page.fill('#api-key', 'cc_0000000000000000_not-a-key');
      await page.click('#signin button[type=submit]');
      await page.waitForSelector('#signin-error:not(:empty)');
      assert.match(await page.textContent('#signin-error'), /refused \(the API key is invalid, revoked or expired\)/);
      assert.equal(await page.evaluate(() => sessionStorage.getItem('cc.key')), null);

      const admin = key('admin');
      const writer = (await api(admin, 'POST', '/api/v1/keys', { role: 'writer', project_id: PROJECT })).token;
      await signIn(page, writer);
      assert.equal(await page.textContent('#role'), 'writer');
      assert.equal(await page.evaluate(() => sessionStorage.getItem('cc.key')), writer);
      assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing in localStorage');
      await page.waitForSelector('#metric-technologies');

      // Revoked elsewhere: the server closes the page's live socket (1008) and the page
      // returns to sign-in by itself, before any request is refused.
      const id = writer.split('_')[1];
      await page.waitForSelector('#live-state.on');
      await api(admin, 'DELETE', `/api/v1/keys/${id}`);
      await page.waitForSelector('#signin-error:not(:empty)');
      assert.match(await page.textContent('#signin-error'), /revoked.*Sign in with a valid key/);
      assert.equal(await page.evaluate(() => sessionStorage.getItem('cc.key')), null);

      // A key refused by a request (one the server does not know) does the same.
      const brief = (await api(admin, 'POST', '/api/v1/keys', { role: 'reader', project_id: PROJECT })).token;
      await signIn(page, brief);
      await page.waitForSelector('#metric-technologies');
      await page.evaluate(() => sessionStorage.setItem('cc.key', 'cc_0000000000000000_not-a-key'));
      await page.click('#nav-jobs');
      await page.waitForSelector('#signin-error:not(:empty)');
      assert.match(await page.textContent('#signin-error'), /refused \(the API key is invalid, revoked or expired\)\. Sign in/);
      assert.equal(await page.evaluate(() => sessionStorage.getItem('cc.key')), null);
    });
  },

  /** A reader sees no create, edit, dispatch or cancel control, and no history. */
  async reader_sees_no_write_controls() {
    const tech = await createTechnology('writer', { title: `Read only ${unique()}` });
    await api(key('writer'), 'POST', '/api/v1/jobs', { project_id: PROJECT, job_type: 'noop' });
    await withPage(async (page) => {
      await signIn(page, key('reader'));
      assert.equal(await page.textContent('#role'), 'reader');
      assert.equal(await page.locator('#nav-history').count(), 0, 'no history for a reader');
      await page.click('#nav-radar');
      await page.waitForSelector(`#technologies tr[data-id="${tech.id}"]`);
      assert.equal(await page.locator('#new-technology').count(), 0);
      await page.click(`#technologies tr[data-id="${tech.id}"] a`);
      await page.waitForSelector('#technology-card');
      assert.equal(await page.locator('#edit-technology').count(), 0);
      assert.equal(await page.locator('#history-link').count(), 0);
      await page.click('#nav-jobs');
      await page.waitForSelector('#jobs tbody tr[data-id]');
      assert.equal(await page.locator('#job-form').count(), 0);
      assert.equal(await page.locator('#jobs button').count(), 0, 'no dispatch or cancel buttons');
      await page.goto(`${BASE}/#/history/technology/${tech.id}`);
      await page.waitForSelector('#metrics');
      assert.equal(await page.locator('#timeline').count(), 0, 'history route falls back for a reader');
    });
  },

  /** A technology created through the form appears on the radar and in the table. */
  async create_technology_through_the_form() {
    const title = `Form made ${unique()}`;
    await withPage(async (page) => {
      await signIn(page, key('writer'), '#/radar');
      await page.click('#new-technology');
      await page.fill('#field-title', title);
      await page.selectOption('#field-domain', 'ai-ml');
      await page.selectOption('#field-status', 'evaluation');
      await page.fill('#field-priority', '5');
      await page.fill('#field-relevance_score', '90');
      await page.fill('#field-tags', 'e2e, form');
      await page.click('#save-technology');
      await page.waitForSelector('#technology-card');
      assert.equal(await page.textContent('#card-title'), title);
      const id = await page.getAttribute('#technology-card', 'data-id');
      await page.waitForSelector(`#radar circle.dot[data-id="${id}"]`);
      await page.waitForSelector(`#technologies tr[data-id="${id}"]`);
      assert.equal(await page.textContent(`#technologies tr[data-id="${id}"] a.title`), title);
      const stored = await api(key('reader'), 'GET', `/api/v1/technologies/${id}`);
      assert.equal(stored.domain, 'ai-ml');
      assert.equal(stored.status, 'evaluation');
      assert.deepEqual(stored.tags, ['e2e', 'form']);
    });
  },

  /** The table sorts, filters, searches and pages by cursor; the jobs list filters and pages. */
  async tables_sort_filter_search_and_page() {
    const run = unique();
    for (let i = 0; i < 60; i++) {
      await createTechnology('writer', {
        title: `Paged ${run} ${String(i).padStart(2, '0')}`,
        domain: i % 2 ? 'ai-ml' : 'ui-ux',
        priority: 1 + (i % 5),
      });
    }
    for (let i = 0; i < 25; i++) {
      await api(key('writer'), 'POST', '/api/v1/jobs', { project_id: PROJECT, job_type: i % 5 ? 'noop' : 'analysis' });
    }
    await withPage(async (page) => {
      await signIn(page, key('reader'), '#/radar');
      await page.waitForSelector('#page-info');
      assert.match(await page.textContent('#page-info'), /Page 1 · 60 technologies/);
      assert.equal(await page.locator('#technologies tbody tr[data-id]').count(), 50);
      await page.click('#next-page');
      await page.waitForFunction(() => document.querySelector('#page-info')?.textContent?.startsWith('Page 2'));
      assert.equal(await page.locator('#technologies tbody tr[data-id]').count(), 10);
      await page.click('#prev-page');
      await page.waitForFunction(() => document.querySelector('#page-info')?.textContent?.startsWith('Page 1'));

      await page.click('button.sort[data-sort="title"]');
      await page.waitForFunction(() => document.querySelector('th[aria-sort="ascending"] button[data-sort="title"]'));
      await page.waitForFunction((r) => document.querySelector('#technologies tbody tr[data-id] a.title')?.textContent === `Paged ${r} 00`, run);
      await page.click('button.sort[data-sort="title"]');
      await page.waitForFunction((r) => document.querySelector('#technologies tbody tr[data-id] a.title')?.textContent === `Paged ${r} 59`, run);

      await page.selectOption('#filter-domain', 'ai-ml');
      await page.waitForFunction(() => /· 30 technologies/.test(document.querySelector('#page-info')?.textContent ?? ''));
      await page.selectOption('#filter-priority', '5');
      await page.waitForFunction(() => /· 6 technologies/.test(document.querySelector('#page-info')?.textContent ?? ''));
      // The radar has its own request: it follows the table, and an older answer
      // (domain only: 30 dots) must never stay drawn over the newer one.
      await eventually('the radar draws what the filters select (6 dots)', async () => (await page.locator('#radar circle.dot').count()) === 6);
      await page.selectOption('#filter-priority', '');
      await page.selectOption('#filter-domain', '');
      await page.fill('#search', `${run} 42`);
      await page.waitForFunction(() => /· 1 technologies/.test(document.querySelector('#page-info')?.textContent ?? ''));
      assert.equal(await page.textContent('#technologies tbody tr[data-id] a.title'), `Paged ${run} 42`);

      await page.click('#nav-jobs');
      await eventually('a full first page of jobs', async () => /· 25 jobs/.test(await page.textContent('#view .pager')));
      assert.equal(await page.locator('#jobs tbody tr[data-id]').count(), 20);
      await page.click('text=Next →');
      await eventually('the second page of jobs', async () => (await page.locator('#jobs tbody tr[data-id]').count()) === 5);
      await page.selectOption('#filter-job-type', 'analysis');
      await eventually('analysis jobs only, on one page', async () => {
        const types = await page.locator('#jobs tbody tr[data-id] td:nth-child(2)').allTextContents();
        return types.length === 5 && types.every((t) => t === 'analysis');
      });
      assert.match(await page.textContent('#view .pager'), /Page 1 · 5 jobs/);
    });
  },

  /** The API's problem+json field error is shown at its field; a stale edit explains 412. */
  async field_errors_and_stale_edits() {
    const tech = await createTechnology('writer', { title: `Edited twice ${unique()}` });
    await withPage(async (page) => {
      await signIn(page, key('writer'), '#/radar');
      await page.click('#new-technology');
      await page.fill('#field-title', `Bad priority ${unique()}`);
      await page.fill('#field-priority', '9');
      await page.click('#save-technology');
      await page.waitForSelector('.field[data-field="priority"].invalid');
      assert.match(await page.textContent('#error-priority'), /between 1 and 5/);
      assert.equal(await page.textContent('#error-title'), '');

      await page.click('#nav-jobs');
      await page.selectOption('#field-job_type', 'noop');
      await page.fill('#field-parameters_steps', '0');
      await page.click('#create-job');
      await page.waitForSelector('.field[data-field="parameters.steps"].invalid');
      assert.match(await page.textContent('#error-parameters_steps'), /from 1 to 100000/);
      await page.selectOption('#field-job_type', 'webhook_delivery');
      await page.fill('#field-parameters_url', 'ftp://example.invalid/');
      await page.click('#create-job');
      await page.waitForSelector('.field[data-field="parameters.url"].invalid');
      assert.match(await page.textContent('#error-parameters_url'), /http:\/\/ or https:\/\//);

      await page.goto(`${BASE}/#/radar/${tech.id}`);
      await page.waitForSelector('#edit-technology');
      await page.click('#edit-technology');
      await api(key('writer'), 'PATCH', `/api/v1/technologies/${tech.id}`, { vendor: 'someone else' });
      await page.fill('#field-description', 'my change');
      await page.click('#save-technology');
      await page.waitForSelector('#form-error:not(:empty)');
      assert.match(await page.textContent('#form-error'), /Changed by someone else.*reload/);
      await page.click('#reload-technology');
      await page.waitForSelector('#technology-card');
      assert.match(await page.textContent('#technology-card'), /someone else/);
    });
  },

  /** A change made through the API by another client shows on the open page within 1 s. */
  async external_changes_appear_live() {
    const tech = await createTechnology('writer', { title: `Before ${unique()}` });
    await withPage(async (page) => {
      await signIn(page, key('reader'), '#/radar');
      await page.waitForSelector(`#technologies tr[data-id="${tech.id}"]`);
      await page.waitForSelector('#live-state.on');
      const title = `After ${unique()}`;
      const started = Date.now();
      await api(key('writer'), 'PATCH', `/api/v1/technologies/${tech.id}`, { title });
      await page.waitForFunction(
        ([id, t]) => document.querySelector(`#technologies tr[data-id="${id}"] a.title`)?.textContent === t,
        [tech.id, title],
        { timeout: 1000 },
      );
      console.log(`change visible after ${Date.now() - started} ms`);
      const created = await createTechnology('writer', { title: `Brand new ${unique()}` });
      await page.waitForSelector(`#technologies tr[data-id="${created.id}"]`, { timeout: 1000 });
      await page.waitForSelector(`#radar circle.dot[data-id="${created.id}"]`, { timeout: 1000 });
    });
  },

  /** The dashboard's cards and activity feed follow changes made elsewhere. */
  async dashboard_follows_changes() {
    await createTechnology('writer', { title: `Already there ${unique()}` });
    await withPage(async (page) => {
      await signIn(page, key('auditor'));
      await page.waitForSelector('#activity li.feed-technology');
      const before = Number(await page.textContent('#metric-technologies .metric-value'));
      const title = `Seen on the dashboard ${unique()}`;
      await createTechnology('writer', { title, status: 'research' });
      await page.waitForFunction(
        (t) => [...document.querySelectorAll('#activity li')].some((li) => li.textContent.includes(t)),
        title,
        { timeout: 2000 },
      );
      await page.waitForFunction(
        (n) => Number(document.querySelector('#metric-technologies .metric-value')?.textContent) === n,
        before + 1,
        { timeout: 2000 },
      );
      assert.match(await page.textContent('#activity li:first-child'), /TechnologyCreated/);
    });
  },

  /** An export job's file downloads from its detail page. */
  async export_artifact_downloads() {
    const exported = await createTechnology('writer', { title: `Exported ${unique()}` });
    // The export reads the read model: wait until the technology is in it.
    await eventually('the technology projected', async () => {
      const { items } = await api(key('reader'), 'GET', `/api/v1/technologies?project_id=${PROJECT}&search=${encodeURIComponent(exported.title)}`);
      return items.length === 1;
    });
    const job = await api(key('writer'), 'POST', '/api/v1/jobs', {
      project_id: PROJECT,
      job_type: 'export',
      parameters: { format: 'csv' },
    });
    await api(key('writer'), 'POST', `/api/v1/jobs/${job.id}/dispatch`);
    await withPage(async (page) => {
      await signIn(page, key('reader'), `#/jobs/${job.id}`);
      await page.waitForSelector('#download-artifact', { timeout: 15_000 });
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-artifact')]);
      assert.equal(download.suggestedFilename(), `export-${job.id}.csv`);
      const path = await download.path();
      const { readFile } = await import('node:fs/promises');
      assert.match(await readFile(path, 'utf8'), /Exported/);
    });
  },

  /** A job created and dispatched from the page shows progress, then completes. */
  async a_job_runs_to_completion_on_the_page() {
    await withPage(async (page) => {
      await signIn(page, key('writer'), '#/jobs');
      await page.selectOption('#field-job_type', 'noop');
      await page.fill('#field-parameters_steps', '10');
      await page.fill('#field-parameters_step_ms', '150');
      await page.click('#create-dispatch-job');
      const row = page.locator('#jobs tbody tr[data-id]').first();
      await eventually('a running job with progress', async () => {
        const status = await row.getAttribute('data-status');
        const progress = Number(await row.locator('progress').getAttribute('value'));
        return status === 'running' && progress > 0 && progress < 100;
      });
      await eventually('the job completed', async () => (await row.getAttribute('data-status')) === 'completed', 15_000);
      assert.equal(await row.locator('progress').getAttribute('value'), '100');
      const id = await row.getAttribute('data-id');
      await page.click(`#jobs tr[data-id="${id}"] a`);
      await page.waitForSelector('#job-result');
      assert.match(await page.textContent('#job-result'), /"steps": 10/);
      assert.equal(await page.textContent('#job-status'), 'completed');
    });
  },

  /** Cancel stops a running job. */
  async cancel_stops_a_running_job() {
    const job = await api(key('writer'), 'POST', '/api/v1/jobs', {
      project_id: PROJECT,
      job_type: 'noop',
      parameters: { steps: 1000, step_ms: 100 },
    });
    await api(key('writer'), 'POST', `/api/v1/jobs/${job.id}/dispatch`);
    await withPage(async (page) => {
      await signIn(page, key('writer'), `#/jobs/${job.id}`);
      await eventually('the job running', async () => (await page.textContent('#job-status').catch(() => '')) === 'running');
      await page.click('#job-detail button.cancel');
      await eventually('the job cancelled', async () => (await page.textContent('#job-status').catch(() => '')) === 'cancelled', 15000);
      const after = await api(key('reader'), 'GET', `/api/v1/jobs/${job.id}`);
      assert.equal(after.status, 'cancelled');
      assert.ok(after.progress < 100, `stopped early (${after.progress} %)`);
    });
  },

  /** The history slider shows the aggregate as it was at an older version. */
  async history_slider_travels_through_versions() {
    const first = `Version one ${unique()}`;
    const tech = await createTechnology('writer', { title: first, priority: 2 });
    await api(key('writer'), 'PATCH', `/api/v1/technologies/${tech.id}`, { title: `Version two ${unique()}` });
    const last = await api(key('writer'), 'PATCH', `/api/v1/technologies/${tech.id}`, { priority: 4 });
    await withPage(async (page) => {
      await signIn(page, key('auditor'), `#/history/technology/${tech.id}`);
      await page.waitForSelector('#timeline li[data-version="3"]');
      await page.waitForSelector('#verify-badge.ok');
      assert.equal(await page.getAttribute('#version-slider', 'max'), String(last.version));
      await page.waitForSelector('#states tr[data-field="priority"]');
      await page.locator('#version-slider').fill('1');
      await page.waitForFunction(
        (t) => document.querySelector('#states tr[data-field="title"] td.as-of')?.textContent === t,
        first,
      );
      assert.equal(await page.textContent('#states tr[data-field="priority"] td.as-of'), '2');
      assert.equal(await page.textContent('#states tr[data-field="priority"] td.current'), '4');
      assert.match(await page.textContent('#version-label'), /^1 of 3$/);
      assert.equal(await page.locator('#states tr.differs[data-field="title"]').count(), 1);
      assert.equal(await page.locator('#states tr.differs[data-field="domain"]').count(), 0);
      await page.locator('#version-slider').fill('2');
      await page.waitForFunction(() => document.querySelector('#states tr[data-field="priority"] td.as-of')?.textContent === '2'
        && /^Version two/.test(document.querySelector('#states tr[data-field="title"] td.as-of')?.textContent ?? ''));
      const entry = await page.textContent('#timeline li[data-version="2"]');
      assert.match(entry, /TechnologyUpdated|Updated|Renamed/i);
      assert.match(entry, /Version one/);
    });
  },

  /** A job's history: its lifecycle on the timeline, and the slider back to pending. */
  async job_history_travels_through_its_lifecycle() {
    const job = await api(key('writer'), 'POST', '/api/v1/jobs', {
      project_id: PROJECT,
      job_type: 'noop',
      parameters: { steps: 2, step_ms: 10 },
    });
    await api(key('writer'), 'POST', `/api/v1/jobs/${job.id}/dispatch`);
    await eventually('the job completed', async () => (await api(key('reader'), 'GET', `/api/v1/jobs/${job.id}`)).status === 'completed');
    await withPage(async (page) => {
      await signIn(page, key('auditor'), '#/history');
      await page.click(`#pick-jobs a[href="#/history/job/${job.id}"]`);
      await page.waitForSelector('#timeline li');
      const timeline = await page.textContent('#timeline');
      for (const event of ['JobCreated', 'JobDispatched', 'JobStarted', 'JobCompleted']) assert.match(timeline, new RegExp(event));
      await page.waitForSelector('#states tr[data-field="status"] td.current');
      assert.equal(await page.textContent('#states tr[data-field="status"] td.current'), 'completed');
      await page.locator('#version-slider').fill('1');
      await page.waitForFunction(() => document.querySelector('#states tr[data-field="status"] td.as-of')?.textContent === 'pending');
      assert.equal(await page.locator('#states tr.differs[data-field="status"]').count(), 1);
    });
  },

  /** A title that looks like markup is shown as those characters, and runs nothing. */
  async markup_in_titles_renders_as_text() {
    const title = '<img src=x onerror=alert(1)>';
    const tech = await createTechnology('writer', { title, description: '<script>alert(2)</script>' });
    await withPage(async (page) => {
      await signIn(page, key('writer'), `#/radar/${tech.id}`);
      await page.waitForSelector('#technology-card');
      assert.equal(await page.textContent('#card-title'), title);
      assert.equal(await page.textContent(`#technologies tr[data-id="${tech.id}"] a.title`), title);
      assert.equal(await page.locator('main img').count(), 0, 'no element made from the title');
      assert.equal(await page.locator('main script').count(), 0);
      assert.equal(await page.evaluate(() => document.querySelectorAll('img[src="x"]').length), 0);
    });
  },

  /** The page and its assets carry the security headers; the page loads nothing else. */
  async security_headers_are_sent() {
    await withPage(async (page) => {
      const requested = [];
      page.on('request', (request) => requested.push(request.url()));
      const response = await page.goto(`${BASE}/`);
      const headers = response.headers();
      const csp = headers['content-security-policy'] ?? '';
      for (const part of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "object-src 'none'"]) {
        assert.ok(csp.includes(part), `CSP has ${part}: ${csp}`);
      }
      assert.ok(!csp.includes('unsafe-inline') && !csp.includes('unsafe-eval'), csp);
      assert.equal(headers['x-content-type-options'], 'nosniff');
      assert.equal(headers['referrer-policy'], 'no-referrer');
      for (const asset of ['/assets/app.js', '/assets/app.css']) {
        const r = await fetch(`${BASE}${asset}`);
        assert.equal(r.status, 200, asset);
        assert.equal(r.headers.get('content-security-policy'), csp, asset);
        assert.equal(r.headers.get('x-content-type-options'), 'nosniff', asset);
      }
      await signIn(page, key('admin'));
      await page.waitForSelector('#metric-technologies');
      await page.waitForSelector('#live-state.on');
      const foreign = requested.filter((url) => !url.startsWith(BASE) && !url.startsWith(BASE.replace('http', 'ws')));
      assert.deepEqual(foreign, [], 'nothing loaded from another host');
      // An inline script injected into the page is refused by the policy.
      const before = page.problems.length;
      const ran = await page.evaluate(() => {
        const s = document.createElement('script');
        s.textContent = 'window.__inline = true';
        document.body.appendChild(s);
        return Boolean(window.__inline);
      });
      assert.equal(ran, false, 'inline script blocked');
      // The refusal above is the expected CSP report; nothing reported before it is excused.
      const expected = page.problems.splice(before);
      assert.ok(expected.every((p) => p.startsWith('CSP: ')), `only the CSP refusal: ${expected.join('; ')}`);
    });
  },

  /**
   * The interactive API reference at /docs: every documented operation is listed, a key
   * given to "Authorize" lets an operation be tried for real, and nothing comes from
   * another host or breaks the page's policy.
   */
  async api_reference() {
    const documented = await (await fetch(`${BASE}/api/v1/openapi.json`)).json();
    const operations = Object.values(documented.paths)
      .flatMap((item) => Object.keys(item).filter((m) => ['get', 'post', 'put', 'patch', 'delete'].includes(m)));
    await withPage(async (page) => {
      const requested = [];
      page.on('request', (request) => requested.push(request.url()));
      const response = await page.goto(`${BASE}/docs`);
      const csp = response.headers()['content-security-policy'] ?? '';
      assert.ok(csp.includes("script-src 'self'") && !csp.includes('unsafe-'), csp);
      await page.waitForSelector('.opblock');
      await eventually('every operation listed', async () =>
        (await page.locator('.opblock').count()) === operations.length);
      assert.ok((await page.textContent('.info .title')).includes(documented.info.title));

      // Authorize with a reader key, then try GET /api/v1/session for real.
      await page.click('.auth-wrapper .authorize');
      await page.fill('.modal-ux input[type="text"], .modal-ux input[type="password"]', key('reader'));
      await page.click('.modal-ux .auth-btn-wrapper .authorize');
      await page.click('.modal-ux .btn-done');
      const session = page.locator('.opblock', { has: page.locator('[data-path="/api/v1/session"]') });
      await session.locator('.opblock-summary').click();
      await session.locator('.try-out__btn').click();
      await session.locator('.execute').click();
      // The live answer: Swagger UI shows the server's status and body under "Server response".
      await eventually('the live answer shown', async () =>
        /Server response\s+Code\s+Details\s+200\b/.test(await session.innerText()));
      const shown = await session.innerText();
      assert.ok(shown.includes('"role": "reader"'), shown);

      const foreign = requested.filter((url) => !url.startsWith(BASE));
      assert.deepEqual(foreign, [], 'nothing loaded from another host');
    });
  },

  /** Screenshots of each view on the demo data, at 1440×900. */
  async screenshots() {
    const dir = env.CC_SCREENSHOTS;
    if (!dir) throw new Error('CC_SCREENSHOTS is not set');
    await mkdir(dir, { recursive: true });
    const root = key('root');
    const { items } = await api(root, 'GET', '/api/v1/technologies?project_id=1&sort=-priority&limit=1');
    const tech = items[0];
    await api(root, 'PATCH', `/api/v1/technologies/${tech.id}`, { relevance_score: Math.min(100, tech.relevance_score + 5) });
    const { jobs } = await api(root, 'GET', '/api/v1/jobs?project_id=1&status_filter=completed&limit=1');
    await withPage(async (page) => {
      const shot = async (name) => {
        await page.waitForTimeout(300);
        await page.screenshot({ path: `${dir}/${name}.png` });
      };
      await page.goto(`${BASE}/`);
      await page.waitForSelector('#signin');
      await shot('sign-in');
      await signIn(page, root);
      await page.waitForSelector('#activity li');
      await page.waitForSelector('#metric-technologies');
      await shot('dashboard');
      await page.goto(`${BASE}/#/radar/${tech.id}`);
      await page.waitForSelector('#radar circle.dot');
      await page.waitForSelector('#technology-card');
      await shot('radar');
      await page.click('#edit-technology');
      await shot('radar-edit');
      await page.goto(`${BASE}/#/jobs`);
      await page.waitForSelector('#jobs tbody tr[data-id]');
      await shot('jobs');
      if (jobs[0]) {
        await page.goto(`${BASE}/#/jobs/${jobs[0].id}`);
        await page.waitForSelector('#job-result');
        await shot('job-detail');
      }
      await page.goto(`${BASE}/#/history/technology/${tech.id}`);
      await page.waitForSelector('#timeline li');
      await page.waitForSelector('#verify-badge.ok');
      await page.locator('#version-slider').fill('1');
      await page.waitForSelector('#states tr.differs');
      await shot('history');
    });
  },

  /** Closing figures on the demo data: first meaningful render, and external change latency. */
  async measure() {
    const loads = await loadTimes(key('admin'), '#/', '#metric-technologies', 10);
    const radar = await loadTimes(key('admin'), '#/radar', '#radar circle.dot', 10);
    const latency = await changeLatency(key('reader'), 50);
    console.log(JSON.stringify({ dashboard_first_render_ms: loads, radar_first_render_ms: radar, change_latency_ms: latency }, null, 2));
  },

  /** The radar with 10,000 technologies: render time, dots drawn, and change latency. */
  async measure_large() {
    const stats = await api(key('admin'), 'GET', `/api/v1/dashboard/stats?project_id=${PROJECT}`);
    assert.ok(stats.technologies.total >= 10_000, `${stats.technologies.total} technologies`);
    const radar = await loadTimes(key('admin'), '#/radar', '#radar circle.dot', 5);
    let dots = 0;
    await withPage(async (page) => {
      await signIn(page, key('admin'), '#/radar');
      await page.waitForSelector('#radar circle.dot');
      dots = await page.locator('#radar circle.dot').count();
      assert.match(await page.textContent('#radar-note'), /at most 400/);
    });
    assert.ok(dots <= 400, `${dots} dots drawn`);
    const latency = await changeLatency(key('reader'), 20);
    console.log(JSON.stringify({ technologies: stats.technologies.total, dots_drawn: dots, radar_first_render_ms: radar, change_latency_ms: latency }, null, 2));
  },
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`unknown scenario ${name}; one of: ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
try {
  await scenarios[name]();
  console.log(`scenario ${name}: passed`);
} catch (error) {
  console.error(`scenario ${name}: FAILED\n${error.stack ?? error}`);
  process.exitCode = 1;
}

function summary(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  const round = (v) => Math.round(v * 10) / 10;
  return { n: sorted.length, p50: round(at(0.5)), p99: round(at(0.99)), min: round(sorted[0]), max: round(sorted.at(-1)) };
}

/**
 * Time from navigation start to `selector` in the document, measured in the page
 * (performance.now(), whose origin is the navigation's start), over `runs` fresh loads of
 * a signed-in tab.
 */
async function loadTimes(apiKey, hash, selector, runs) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    await withPage(async (page, browser, context) => {
      await context.addInitScript(
        ([k, sel]) => {
          sessionStorage.setItem('cc.key', k);
          const seen = () => {
            if (!window.__rendered && document.querySelector(sel)) window.__rendered = performance.now();
          };
          new MutationObserver(seen).observe(document, { childList: true, subtree: true });
        },
        [apiKey, selector],
      );
      await page.goto(`${BASE}/${hash}`);
      await page.waitForFunction(() => window.__rendered !== undefined, null, { timeout: 30_000 });
      times.push(await page.evaluate(() => window.__rendered));
    });
  }
  return summary(times);
}

/**
 * Latency of `count` title changes made by another client (this process, over HTTP) until
 * the open radar page shows them: both ends read the same clock as
 * performance.timeOrigin + performance.now().
 */
async function changeLatency(apiKey, count) {
  // The most recently updated technology that is not archived (archived ones refuse edits).
  const { items } = await api(apiKey, 'GET', `/api/v1/technologies?project_id=${PROJECT}&sort=-updated_at&limit=50`);
  const target = items.find((t) => t.status !== 'archived');
  const latencies = [];
  await withPage(async (page) => {
    await signIn(page, apiKey, '#/radar');
    await page.waitForSelector(`#technologies tr[data-id="${target.id}"]`);
    await page.waitForSelector('#live-state.on');
    for (let i = 0; i < count; i++) {
      const title = `${target.title.slice(0, 40)} · change ${i} ${unique()}`;
      await page.evaluate(
        ([id, t]) => {
          window.__seen = new Promise((resolve) => {
            const check = () => {
              if (document.querySelector(`#technologies tr[data-id="${id}"] a.title`)?.textContent === t) {
                observer.disconnect();
                resolve(performance.timeOrigin + performance.now());
              }
            };
            const observer = new MutationObserver(check);
            observer.observe(document.body, { childList: true, subtree: true, characterData: true });
          });
        },
        [target.id, title],
      );
      const sent = performance.timeOrigin + performance.now();
      await api(key('writer'), 'PATCH', `/api/v1/technologies/${target.id}`, { title });
      const seen = await page.evaluate(() => window.__seen);
      latencies.push(seen - sent);
    }
  });
  return summary(latencies);
}
