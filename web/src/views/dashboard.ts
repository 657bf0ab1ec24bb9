// Dashboard: metric cards and a status chart from `/dashboard/stats` and
// `/jobs/statistics/summary` (reloaded when the socket reports a change), and, for keys
// that may read it, the activity feed: the event feed long-polled from the last hour on.

import { ApiError, get, query } from '../api';
import { debounce, h, replace, s, when } from '../dom';
import { STATUSES, JOB_STATUSES, type Context } from '../model';

interface Stats {
  technologies: { total: number; by_domain: Record<string, number>; by_status: Record<string, number> };
  jobs: { active: number; failed_last_24h: number; by_status: Record<string, number> };
}

interface Summary {
  total: number;
  /** A percentage, 0–100. */
  success_rate: number | null;
  average_duration_seconds: number | null;
}

interface FeedEvent {
  aggregate_type: string;
  aggregate_id: string;
  sequence: number;
  event_type: string;
  metadata: { actor?: string; correlation_id?: string };
  payload: Record<string, unknown>;
  position: string;
  recorded_at: string;
}

const FEED_SHOWN = 30;

function card(id: string, label: string, value: string, detail?: string): HTMLElement {
  return h(
    'div',
    { class: 'card metric', id },
    h('div', { class: 'metric-label' }, label),
    h('div', { class: 'metric-value' }, value),
    detail ? h('div', { class: 'metric-detail' }, detail) : null,
  );
}

/** A horizontal bar chart, one bar per name, drawn as SVG. */
export function barChart(title: string, names: string[], counts: Record<string, number>, css: string): SVGElement {
  const max = Math.max(1, ...names.map((n) => counts[n] ?? 0));
  const row = 26;
  const width = 520;
  const label = 120;
  return s(
    'svg',
    { viewBox: `0 0 ${width} ${names.length * row + 30}`, class: `chart ${css}`, role: 'img', 'aria-label': title },
    s('text', { x: 0, y: 16, class: 'chart-title' }, title),
    names.map((name, i) => {
      const n = counts[name] ?? 0;
      const w = ((width - label - 50) * n) / max;
      const y = 28 + i * row;
      return s(
        'g',
        { class: `bar status-${name}` },
        s('text', { x: 0, y: y + 15, class: 'bar-label' }, name),
        s('rect', { x: label, y: y + 2, width: Math.max(w, n > 0 ? 2 : 0), height: row - 8, rx: 3 }),
        s('text', { x: label + w + 6, y: y + 15, class: 'bar-value' }, String(n)),
      );
    }),
  );
}

function describe(event: FeedEvent): string {
  // Payloads are `{"<EventType>": {fields}}`.
  // Payloads are `{"<EventType>": {fields}}`; a creation nests the new aggregate's
  // fields, an update its changed ones.
  const body = (Object.values(event.payload ?? {})[0] ?? {}) as Record<string, Record<string, unknown> | undefined>;
  const named = [body, body.technology, body.changes, body.job].find((part) => typeof part?.title === 'string');
  const title = named ? ` “${String(named.title)}”` : '';
  return `${event.event_type} · ${event.aggregate_type} ${event.aggregate_id.slice(0, 8)}${title}`;
}

export function dashboardView(root: HTMLElement, ctx: Context): () => void {
  const cards = h('section', { class: 'cards', id: 'metrics' }, h('p', null, 'Loading…'));
  const charts = h('section', { class: 'charts' });
  const feedList = h('ol', { class: 'feed', id: 'activity' });
  const feed = h(
    'section',
    { class: 'panel' },
    h('h2', null, 'Activity'),
    ctx.session.can_audit
      ? feedList
      : h('p', { class: 'muted' }, 'The event feed is open to auditor and admin keys.'),
  );
  replace(root, h('h1', null, 'Dashboard'), cards, h('div', { class: 'two' }, charts, feed));
  const abort = new AbortController();

  const load = async () => {
    const q = query({ project_id: ctx.project });
    const [stats, summary] = await Promise.all([
      get<Stats>(`/api/v1/dashboard/stats${q}`, { signal: abort.signal }),
      get<Summary>(`/api/v1/jobs/statistics/summary${q}`, { signal: abort.signal }),
    ]);
    const t = stats.data.technologies;
    const j = stats.data.jobs;
    const rate = summary.data.success_rate;
    const mean = summary.data.average_duration_seconds;
    replace(
      cards,
      card('metric-technologies', 'Technologies', String(t.total), `${t.by_status.integrated ?? 0} integrated`),
      STATUSES.map((st) => card(`metric-status-${st}`, st, String(t.by_status[st] ?? 0))),
      card('metric-active', 'Jobs active', String(j.active), 'pending or running'),
      card('metric-failed', 'Jobs failed (24 h)', String(j.failed_last_24h)),
      card('metric-success', 'Success rate', rate === null || rate === undefined ? '—' : `${rate.toFixed(1)} %`),
      card('metric-duration', 'Mean duration', mean === null || mean === undefined ? '—' : `${mean.toFixed(2)} s`),
    );
    replace(
      charts,
      h('div', { class: 'panel' }, barChart('Technologies by status', STATUSES, t.by_status, 'tech')),
      h('div', { class: 'panel' }, barChart('Jobs by status', JOB_STATUSES, j.by_status, 'jobs')),
    );
  };
  const reload = debounce(() => void load().catch(ignoreAbort), 150);
  load().catch(ignoreAbort);
  const stops = [
    ctx.live.subscribe(`technologies:${ctx.project}`, reload),
    ctx.live.subscribe(`jobs:${ctx.project}`, reload),
  ];

  if (ctx.session.can_audit) void follow(feedList, ctx, abort.signal);
  return () => {
    abort.abort();
    stops.forEach((stop) => stop());
  };
}

function ignoreAbort(err: unknown): void {
  if (err instanceof DOMException && err.name === 'AbortError') return;
  if (err instanceof ApiError && err.status === 401) return;
  console.error(err);
}

/** Reads the feed from an hour back to the head, then long-polls it. */
async function follow(list: HTMLElement, ctx: Context, signal: AbortSignal): Promise<void> {
  const since = new Date(Date.now() - 3600_000).toISOString();
  let after: string | null = null;
  const shown: FeedEvent[] = [];
  while (!signal.aborted) {
    try {
      const params: Record<string, string | number> = after
        ? { after, limit: 1000, wait_ms: 25000, project_id: ctx.project }
        : { since, limit: 1000, project_id: ctx.project };
      const { data }: { data: { events: FeedEvent[]; next_after: string } } = await get(`/api/v1/events${query(params)}`, {
        signal,
      });
      after = data.next_after;
      shown.push(...data.events);
      shown.splice(0, Math.max(0, shown.length - FEED_SHOWN));
      replace(
        list,
        shown
          .slice()
          .reverse()
          .map((e) =>
            h(
              'li',
              { class: `feed-${e.aggregate_type}` },
              h('time', null, when(e.recorded_at)),
              h('span', { class: 'event' }, describe(e)),
              h('span', { class: 'muted' }, `by ${e.metadata?.actor ?? '—'}`),
            ),
          ),
      );
      if (shown.length === 0) replace(list, h('li', { class: 'muted' }, 'No events in the last hour.'));
    } catch (err) {
      if (signal.aborted || (err instanceof ApiError && err.status === 401)) return;
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}
