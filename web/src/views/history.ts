// History and time travel (auditor and admin keys): a technology's or job's timeline
// (event, actor, time, correlation id, field changes) and a slider over its versions
// showing the aggregate as of that version (`as_of_version`) beside its current state;
// the chain verification badge for the project.

import { ApiError, get, query } from '../api';
import { h, replace, show, when } from '../dom';
import type { Context } from '../model';

interface Change {
  field: string;
  from: unknown;
  to: unknown;
}

interface Entry {
  sequence: number;
  event_type: string;
  actor: string | null;
  correlation_id: string | null;
  recorded_at: string;
  position: string;
  changes: Change[];
}

interface History {
  version: number;
  events: Entry[];
  next_cursor: number | null;
}

interface Verify {
  passed: boolean;
  events_checked: number;
  broken_count: number;
}

/** Bookkeeping that differs between any two reads, not part of the aggregate's state. */
const HIDDEN = new Set(['search', 'as_of', 'position', 'created_position']);

/** Times compare and show as instants, whichever way the source wrote them. */
function normal(key: string, value: unknown): unknown {
  if (key.endsWith('_at') && typeof value === 'string') {
    const t = new Date(value);
    if (!Number.isNaN(t.getTime())) return t.toISOString();
  }
  return value;
}

/**
 * The aggregate as of the chosen version beside its current state, one row per field;
 * the fields that differ come first, highlighted.
 */
function compare(version: number, past: Record<string, unknown> | null, now: Record<string, unknown> | null): HTMLElement {
  const keys = [...new Set([...Object.keys(past ?? {}), ...Object.keys(now ?? {})])].filter((k) => !HIDDEN.has(k));
  const rows = keys.map((k) => {
    const then = normal(k, past?.[k]);
    const current = normal(k, now?.[k]);
    return { k, then, current, differs: JSON.stringify(then) !== JSON.stringify(current) };
  });
  rows.sort((a, b) => Number(b.differs) - Number(a.differs) || a.k.localeCompare(b.k));
  return h(
    'table',
    { class: 'state', id: 'states' },
    h('thead', null, h('tr', null, h('th', null, 'Field'), h('th', null, `As of version ${version}`), h('th', null, now ? 'Current' : 'Current (deleted)'))),
    h(
      'tbody',
      null,
      rows.map((r) =>
        h(
          'tr',
          { class: r.differs ? 'differs' : '', 'data-field': r.k },
          h('th', null, r.k),
          h('td', { class: 'as-of' }, show(r.then)),
          h('td', { class: 'current' }, show(r.current)),
        ),
      ),
    ),
  );
}

/** The latest technologies and jobs, each a link to its history. */
async function pickers(ctx: Context, technologies: HTMLElement, jobs: HTMLElement, signal: AbortSignal): Promise<void> {
  try {
    const [t, j] = await Promise.all([
      get<{ items: { id: string; title: string; status: string; version: number }[] }>(
        `/api/v1/technologies${query({ project_id: ctx.project, sort: '-updated_at', limit: 20 })}`,
        { signal },
      ),
      get<{ jobs: { id: string; job_type: string; status: string; version: number }[] }>(
        `/api/v1/jobs${query({ project_id: ctx.project, limit: 20 })}`,
        { signal },
      ),
    ]);
    replace(
      technologies,
      t.data.items.map((x) =>
        h('li', null, h('a', { href: `#/history/technology/${x.id}` }, x.title), h('span', { class: 'muted' }, ` · ${x.status} · v${x.version}`)),
      ),
    );
    replace(
      jobs,
      j.data.jobs.map((x) =>
        h('li', null, h('a', { href: `#/history/job/${x.id}`, class: 'mono' }, x.id.slice(0, 8)), h('span', { class: 'muted' }, ` · ${x.job_type} · ${x.status} · v${x.version}`)),
      ),
    );
  } catch (err) {
    if (!(err instanceof DOMException && err.name === 'AbortError')) console.error(err);
  }
}

export function historyView(root: HTMLElement, ctx: Context, args: string[]): () => void {
  const [kind, id] = args;
  const abort = new AbortController();
  const badge = h('span', { class: 'badge pending', id: 'verify-badge' }, 'Verifying chain…');
  if (kind !== 'technology' && kind !== 'job') {
    const technologies = h('ul', { class: 'picks', id: 'pick-technologies' });
    const jobs = h('ul', { class: 'picks', id: 'pick-jobs' });
    replace(
      root,
      h('h1', null, 'History'),
      badge,
      h('p', { class: 'muted' }, 'Choose a technology or a job to see its timeline and travel through its versions.'),
      h(
        'div',
        { class: 'two' },
        h('section', { class: 'panel' }, h('h2', null, 'Recently changed technologies'), technologies),
        h('section', { class: 'panel' }, h('h2', null, 'Recent jobs'), jobs),
      ),
    );
    void pickers(ctx, technologies, jobs, abort.signal);
  }
  void get<Verify>(`/api/v1/audit/verify${query({ project_id: ctx.project })}`, { signal: abort.signal })
    .then(({ data }) => {
      badge.className = `badge ${data.passed ? 'ok' : 'broken'}`;
      badge.textContent = data.passed
        ? `Chain verified · ${data.events_checked} events`
        : `Chain broken · ${data.broken_count} bad links`;
    })
    .catch(() => {
      badge.className = 'badge broken';
      badge.textContent = 'Chain not verified';
    });
  if (kind !== 'technology' && kind !== 'job') return () => abort.abort();

  const base = `/api/v1/${kind === 'technology' ? 'technologies' : 'jobs'}/${encodeURIComponent(id)}`;
  const timeline = h('ol', { class: 'timeline', id: 'timeline' });
  const slider = h('input', { type: 'range', id: 'version-slider', min: 1, max: 1, step: 1, value: 1 });
  const label = h('output', { id: 'version-label', for: 'version-slider' });
  const states = h('div', { id: 'time-travel' });
  replace(
    root,
    h('h1', null, `History of ${kind} `, h('span', { class: 'mono' }, id)),
    badge,
    h(
      'div',
      { class: 'history-layout' },
      h('section', { class: 'panel timeline-box' }, h('h2', null, 'Timeline'), timeline),
      h(
        'section',
        { class: 'panel' },
        h('h2', null, 'Time travel'),
        h('div', { class: 'slider' }, h('label', { for: 'version-slider' }, 'Version'), slider, label),
        states,
      ),
    ),
  );

  let current: Record<string, unknown> | null = null;
  let version = 0;
  let request = 0;
  const showVersion = async (v: number) => {
    const mine = ++request;
    label.textContent = `${v} of ${version}`;
    try {
      const { data } = await get<Record<string, unknown>>(`${base}${query({ as_of_version: v })}`, { signal: abort.signal });
      if (mine === request) replace(states, compare(v, data, current));
    } catch (err) {
      if (mine === request && err instanceof ApiError) replace(states, h('p', { class: 'muted' }, err.message));
    }
  };
  slider.addEventListener('input', () => void showVersion(Number(slider.value)));

  const load = async () => {
    const entries: Entry[] = [];
    let after: number | null = null;
    let history: History;
    do {
      ({ data: history } = await get<History>(`${base}/history${query({ after_version: after, limit: 1000 })}`, { signal: abort.signal }));
      entries.push(...history.events);
      after = history.next_cursor;
    } while (after !== null && entries.length < 10_000);
    version = history.version;
    try {
      current = (await get<Record<string, unknown>>(base, { signal: abort.signal })).data;
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
      current = null;
    }
    slider.max = String(Math.max(1, version));
    slider.value = String(Math.max(1, version));
    void showVersion(Math.max(1, version));
    replace(
      timeline,
      entries
        .slice()
        .reverse()
        .map((e) =>
          h(
            'li',
            { 'data-version': e.sequence },
            h(
              'div',
              { class: 'entry-head' },
              h('strong', null, `v${e.sequence} ${e.event_type}`),
              h('time', null, when(e.recorded_at)),
              h('span', null, `actor ${e.actor ?? '—'}`),
              h('span', { class: 'mono muted' }, `correlation ${e.correlation_id ?? '—'}`),
            ),
            e.changes.length
              ? h(
                  'table',
                  { class: 'diff' },
                  h(
                    'tbody',
                    null,
                    e.changes.map((c) => h('tr', null, h('th', null, c.field), h('td', { class: 'from' }, show(c.from)), h('td', { class: 'to' }, show(c.to)))),
                  ),
                )
              : null,
          ),
        ),
    );
  };
  load().catch((err) => {
    if (err instanceof ApiError && err.status !== 401) replace(timeline, h('li', null, err.message));
  });
  return () => abort.abort();
}
