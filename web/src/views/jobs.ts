// Jobs: the list (status and type filters, cursor paging) with progress bars kept live by
// `jobs:<project>`, the create form (each job type with its parameters), dispatch and
// cancel; `#/jobs/<id>` shows one job live (`job:<id>`): progress, result, error and
// traceback, attempts, and the export artifact.

import { ApiError, call, get, getKey, query } from '../api';
import { debounce, h, replace, show, when } from '../dom';
import type { Change } from '../live';
import { JOB_STATUSES, JOB_TYPES, type Context, type Job } from '../model';
import { clearErrors, field, select, showError, text, type Input } from './form';

const PAGE = 20;

interface JobPage {
  jobs: Job[];
  total: number;
  next_cursor: string | null;
}

/** Each job type's parameters: name, label, default, kind. */
const PARAMETERS: Record<string, [string, string, string, 'number' | 'text' | 'json' | 'format' | 'projects'][]> = {
  analysis: [
    ['stale_days', 'Stale after (days)', '90', 'number'],
    ['top', 'Top technologies', '10', 'number'],
  ],
  scheduled_analysis: [
    ['stale_days', 'Stale after (days)', '90', 'number'],
    ['top', 'Top technologies', '10', 'number'],
  ],
  export: [['format', 'Format', 'json', 'format']],
  batch_analysis: [
    ['project_ids', 'Projects (ids, comma-separated)', '', 'projects'],
    ['stale_days', 'Stale after (days)', '90', 'number'],
    ['top', 'Top technologies', '10', 'number'],
  ],
  batch_export: [
    ['project_ids', 'Projects (ids, comma-separated)', '', 'projects'],
    ['format', 'Format', 'json', 'format'],
  ],
  webhook_delivery: [
    ['url', 'URL', '', 'text'],
    ['payload', 'Payload (JSON)', '{}', 'json'],
    ['timeout_ms', 'Timeout (ms)', '5000', 'number'],
  ],
  noop: [
    ['steps', 'Steps', '10', 'number'],
    ['step_ms', 'Milliseconds per step', '200', 'number'],
  ],
};

function progressBar(job: Job): HTMLElement {
  return h(
    'div',
    { class: 'progress' },
    h('progress', { max: 100, value: job.progress ?? 0, 'aria-label': `Progress of job ${job.id}` }),
    h('span', { class: 'progress-value' }, `${Math.round(job.progress ?? 0)} %`),
  );
}

function actions(job: Job, ctx: Context, after: () => void): HTMLElement[] {
  if (!ctx.session.can_write) return [];
  const buttons: HTMLElement[] = [];
  const act = (label: string, path: string, css: string) => {
    const button = h('button', { type: 'button', class: css }, label);
    button.addEventListener('click', async () => {
      button.setAttribute('disabled', '');
      try {
        await call('POST', `/api/v1/jobs/${encodeURIComponent(job.id)}/${path}`);
      } catch (err) {
        alertError(err);
      }
      after();
    });
    buttons.push(button);
  };
  if (job.status === 'pending' && !job.dispatched_at) act('Dispatch', 'dispatch', 'dispatch');
  if (job.status === 'pending' || job.status === 'running') act('Cancel', 'cancel', 'cancel');
  return buttons;
}

function alertError(err: unknown): void {
  if (err instanceof ApiError && err.status === 401) return;
  window.alert(err instanceof Error ? err.message : String(err));
}

function quiet(err: unknown): void {
  if (err instanceof DOMException && err.name === 'AbortError') return;
  if (err instanceof ApiError && err.status === 401) return;
  console.error(err);
}

export function jobsView(root: HTMLElement, ctx: Context, args: string[]): () => void {
  if (args[0]) return jobDetail(root, ctx, args[0]);
  const abort = new AbortController();
  const statusSel = select(JOB_STATUSES, '', 'All statuses');
  const typeSel = select(JOB_TYPES, '', 'All types');
  statusSel.id = 'filter-job-status';
  typeSel.id = 'filter-job-type';
  const table = h('table', { class: 'grid', id: 'jobs' });
  const pager = h('div', { class: 'pager' });
  let cursors: (string | null)[] = [null];
  const rows = new Map<string, HTMLTableRowElement>();

  const row = (job: Job): HTMLTableRowElement =>
    h(
      'tr',
      { 'data-id': job.id, 'data-status': job.status },
      h('td', null, h('a', { href: `#/jobs/${job.id}`, class: 'mono' }, job.id.slice(0, 8))),
      h('td', null, job.job_type),
      h('td', null, h('span', { class: `pill job-${job.status}` }, job.status)),
      h('td', null, progressBar(job)),
      h('td', null, job.current_step ?? ''),
      h('td', { class: 'num' }, `${job.attempts ?? 0}/${job.max_attempts ?? '—'}`),
      h('td', null, when(job.created_at)),
      h('td', null, h('div', { class: 'actions' }, actions(job, ctx, () => reload()))),
    );

  // Only the newest call's answer is drawn: when the filters change while a request is
  // in flight, the older answer may arrive last and must not be drawn over the newer one.
  let calls = 0;
  const load = async () => {
    const call = ++calls;
    const cursor = cursors[cursors.length - 1];
    const { data } = await get<JobPage>(
      `/api/v1/jobs${query({ project_id: ctx.project, status_filter: statusSel.value, job_type: typeSel.value, limit: PAGE, cursor })}`,
      { signal: abort.signal },
    );
    if (call !== calls) return;
    rows.clear();
    replace(
      table,
      h('thead', null, h('tr', null, ['Job', 'Type', 'Status', 'Progress', 'Step', 'Attempts', 'Created', ''].map((c) => h('th', null, c)))),
      h(
        'tbody',
        null,
        data.jobs.map((job) => {
          const tr = row(job);
          rows.set(job.id, tr);
          return tr;
        }),
        data.jobs.length === 0 ? h('tr', { class: 'empty' }, h('td', { colspan: 8, class: 'muted' }, 'No jobs match.')) : null,
      ),
    );
    const prev = h('button', { type: 'button', disabled: cursors.length === 1 }, '← Previous');
    const next = h('button', { type: 'button', disabled: !data.next_cursor }, 'Next →');
    prev.addEventListener('click', () => {
      cursors.pop();
      void load().catch(quiet);
    });
    next.addEventListener('click', () => {
      cursors.push(data.next_cursor);
      void load().catch(quiet);
    });
    replace(pager, prev, h('span', null, `Page ${cursors.length} · ${data.total} jobs`), next);
  };
  const reload = debounce(() => void load().catch(quiet), 80);
  const onChange = (change: Change) => {
    const existing = rows.get(change.id);
    const job = change.row as Job | null;
    const filtered = (statusSel.value && job?.status !== statusSel.value) || (typeSel.value && job?.job_type !== typeSel.value);
    if (existing && job && !change.deleted && !filtered) {
      const fresh = row(job);
      existing.replaceWith(fresh);
      rows.set(job.id, fresh);
    } else {
      reload();
    }
  };
  [statusSel, typeSel].forEach((el) =>
    el.addEventListener('change', () => {
      cursors = [null];
      reload();
    }),
  );
  replace(
    root,
    h('h1', null, 'Jobs'),
    h('div', { class: 'toolbar' }, statusSel, typeSel),
    h(
      'div',
      { class: 'jobs-layout' },
      h('section', { class: 'panel' }, table, pager),
      ctx.session.can_write ? h('aside', { class: 'panel side' }, jobForm(ctx, reload)) : null,
    ),
  );
  void load().catch(quiet);
  const stop = ctx.live.subscribe(`jobs:${ctx.project}`, onChange);
  return () => {
    abort.abort();
    stop();
  };
}

function jobForm(ctx: Context, created: () => void): HTMLElement {
  const typeSel = select(JOB_TYPES, 'noop');
  const params = h('div', { class: 'params' });
  const maxAttempts = text(3, 'number');
  const tags = text('');
  const delay = text(0, 'number');
  const formError = h('p', { class: 'form-error', role: 'alert' });
  let inputs: [string, Input, string][] = [];
  const drawParams = () => {
    inputs = PARAMETERS[typeSel.value].map(([name, , initial, kind]) => {
      let input: Input;
      if (kind === 'format') input = select(['json', 'csv'], initial);
      else if (kind === 'json') input = h('textarea', { rows: 3 }, initial);
      else if (kind === 'projects') input = text(String(ctx.project));
      else input = text(initial, kind === 'number' ? 'number' : 'text');
      return [name, input, kind];
    });
    replace(
      params,
      PARAMETERS[typeSel.value].map(([name, label], i) => field(`parameters.${name}`, label, inputs[i][1])),
    );
    delay.value = typeSel.value === 'scheduled_analysis' ? '5' : '0';
  };
  typeSel.addEventListener('change', drawParams);
  drawParams();
  const form = h(
    'form',
    { id: 'job-form', novalidate: true },
    h('h2', null, 'New job'),
    field('job_type', 'Type', typeSel),
    params,
    h('div', { class: 'row' }, field('max_attempts', 'Max attempts', maxAttempts), field('delay_seconds', 'Dispatch delay (s)', delay)),
    field('tags', 'Tags', tags, 'Comma-separated'),
    formError,
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'submit', class: 'primary', id: 'create-dispatch-job', value: 'dispatch' }, 'Create and dispatch'),
      h('button', { type: 'submit', id: 'create-job', value: 'create' }, 'Create'),
    ),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const dispatch = (event.submitter as HTMLButtonElement | null)?.value !== 'create';
    const parameters: Record<string, unknown> = {};
    for (const [name, input, kind] of inputs) {
      const raw = input.value.trim();
      if (raw === '') continue;
      if (kind === 'number') parameters[name] = Number(raw);
      else if (kind === 'projects') parameters[name] = raw.split(',').map((p) => Number(p.trim()));
      else if (kind === 'json') {
        try {
          parameters[name] = JSON.parse(raw);
        } catch {
          showError(form, new ApiError(422, { field: `parameters.${name}`, detail: 'not valid JSON' }), formError);
          return;
        }
      } else parameters[name] = raw;
    }
    const body: Record<string, unknown> = { project_id: ctx.project, job_type: typeSel.value, parameters };
    if (maxAttempts.value.trim()) body.max_attempts = Number(maxAttempts.value);
    if (tags.value.trim()) body.tags = tags.value.split(',').map((t) => t.trim());
    try {
      const { data } = await call<Job>('POST', '/api/v1/jobs', { body });
      if (dispatch) {
        const seconds = Number(delay.value || 0);
        await call('POST', `/api/v1/jobs/${encodeURIComponent(data.id)}/dispatch${query({ delay_seconds: seconds || null })}`);
      }
      created();
    } catch (err) {
      showError(form, err, formError);
    }
  });
  return form;
}

function jobDetail(root: HTMLElement, ctx: Context, id: string): () => void {
  const abort = new AbortController();
  const body = h('div', { id: 'job-detail' }, h('p', null, 'Loading…'));
  replace(root, h('p', null, h('a', { href: '#/jobs' }, '← All jobs')), body);
  const draw = (job: Job) => {
    const download = (job.job_type === 'export' || job.job_type === 'batch_export') && job.status === 'completed';
    const downloadButton = download ? h('button', { type: 'button', id: 'download-artifact' }, 'Download export') : null;
    downloadButton?.addEventListener('click', () => void downloadArtifact(job).catch(alertError));
    replace(
      body,
      h('h1', null, `Job ${job.id}`),
      h('div', { class: 'job-head' }, h('span', { class: `pill job-${job.status}`, id: 'job-status' }, job.status), progressBar(job), h('span', { id: 'job-step' }, job.current_step ?? '')),
      h(
        'div',
        { class: 'actions' },
        actions(job, ctx, () => void load().catch(quiet)),
        downloadButton,
        ctx.session.can_audit ? h('a', { class: 'button', href: `#/history/job/${job.id}` }, 'History') : null,
      ),
      h(
        'dl',
        { class: 'facts' },
        (
          [
            ['Type', job.job_type],
            ['Attempts', `${job.attempts ?? 0} of ${job.max_attempts ?? '—'}`],
            ['Created', when(job.created_at)],
            ['Started', when(job.started_at)],
            ['Completed', when(job.completed_at)],
            ['Tags', (job.tags ?? []).join(', ')],
            ['Version', job.version],
          ] as [string, unknown][]
        ).map(([k, v]) => [h('dt', null, k), h('dd', null, show(v))]),
      ),
      h('h2', null, 'Parameters'),
      h('pre', { id: 'job-parameters' }, show(job.parameters)),
      h('h2', null, 'Result'),
      h('pre', { id: 'job-result' }, show(job.result)),
      job.error ? [h('h2', null, 'Error'), h('pre', { class: 'error', id: 'job-error' }, job.error)] : null,
      job.traceback ? [h('h2', null, 'Traceback'), h('pre', { id: 'job-traceback' }, job.traceback)] : null,
    );
  };
  const load = async () => {
    const { data } = await get<Job>(`/api/v1/jobs/${encodeURIComponent(id)}`, { signal: abort.signal });
    draw(data);
  };
  load().catch((err) => {
    if (err instanceof ApiError && err.status === 404) replace(body, h('p', null, 'No such job.'));
    else quiet(err);
  });
  const stop = ctx.live.subscribe(`job:${id}`, (change) => {
    if (change.row) draw(change.row as Job);
  });
  return () => {
    abort.abort();
    stop();
  };
}

/** Fetches the artifact with the key (a plain link could not send it) and saves it. */
async function downloadArtifact(job: Job): Promise<void> {
  const response = await fetch(`/api/v1/jobs/${encodeURIComponent(job.id)}/artifact`, {
    headers: { authorization: `Bearer ${getKey() ?? ''}` },
    credentials: 'omit',
  });
  if (!response.ok) throw new Error(`download failed: HTTP ${response.status}`);
  const blob = await response.blob();
  const format = (job.parameters?.format as string | undefined) ?? 'json';
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: `export-${job.id}.${format}` });
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
