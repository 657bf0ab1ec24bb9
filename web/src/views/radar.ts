// Technology radar: the radar (rings = status, sectors = domain, dot size = priority,
// shade = relevance), a sortable table with the API's filters, search and cursor paging,
// a card per technology, and the create and edit forms. Live: any change on
// `technologies:<project>` reloads what is shown.
//
// Large projects: the radar draws at most RADAR_CAP dots (the highest priority first,
// one request), and every ring × sector cell is labelled with its full count from the
// dashboard statistics' `by_domain_status` (precomputed counts), so 10,000 technologies
// cost the page the same as 400. The table is paged (50 a page, by cursor).

import { ApiError, call, get, query } from '../api';
import { debounce, h, replace, s, show, when } from '../dom';
import type { Change } from '../live';
import { COST_TIERS, DOMAINS, MATURITY, STATUSES, type Context, type Technology } from '../model';
import { clearErrors, field, select, showError, text, type Input } from './form';

const RADAR_CAP = 400;
const PAGE = 50;

interface Page {
  items: Technology[];
  total: number;
  next_cursor: string | null;
}

interface Cell {
  domain: string;
  status: string;
  count: number;
}

interface Filters {
  domain: string;
  status: string;
  search: string;
  priority_min: string;
  sort: string;
}

/** A stable pseudo-random number in [0, 1) from a string (dot placement inside a cell). */
function hash01(id: string, salt: number): number {
  let x = 2166136261 ^ salt;
  for (let i = 0; i < id.length; i++) {
    x ^= id.charCodeAt(i);
    x = Math.imul(x, 16777619);
  }
  return ((x >>> 0) % 10007) / 10007;
}

const SIZE = 640;
const C = SIZE / 2;
const R = C - 70;

function polar(radius: number, angle: number): [number, number] {
  return [C + radius * Math.cos(angle - Math.PI / 2), C + radius * Math.sin(angle - Math.PI / 2)];
}

function drawRadar(items: Technology[], cells: Cell[], select: (id: string) => void): SVGElement {
  const ring = R / STATUSES.length;
  const sector = (2 * Math.PI) / DOMAINS.length;
  const rings = STATUSES.map((status, i) =>
    s('circle', { cx: C, cy: C, r: ring * (i + 1), class: `ring ring-${status}` }),
  );
  const spokes = DOMAINS.map((_, j) => {
    const [x, y] = polar(R, j * sector);
    return s('line', { x1: C, y1: C, x2: x, y2: y, class: 'spoke' });
  });
  const ringLabels = STATUSES.map((status, i) =>
    s('text', { x: C + 4, y: C - ring * i - ring / 2 + 4, class: 'ring-label' }, status),
  );
  const sectorLabels = DOMAINS.map((domain, j) => {
    const [x, y] = polar(R + 22, (j + 0.5) * sector);
    return s('text', { x, y, class: 'sector-label', 'text-anchor': 'middle' }, domain);
  });
  const counts = cells
    .filter((c) => STATUSES.includes(c.status) && DOMAINS.includes(c.domain))
    .map((c) => {
      const i = STATUSES.indexOf(c.status);
      const j = DOMAINS.indexOf(c.domain);
      const [x, y] = polar(ring * (i + 0.5), (j + 0.85) * sector);
      return s('text', { x, y, class: 'cell-count', 'text-anchor': 'middle', 'data-cell': `${c.domain}/${c.status}` }, String(c.count));
    });
  const dots = items.map((t) => {
    const i = Math.max(0, STATUSES.indexOf(t.status));
    const j = Math.max(0, DOMAINS.indexOf(t.domain));
    const radius = ring * (i + 0.15 + 0.7 * hash01(t.id, 1));
    const angle = sector * (j + 0.1 + 0.65 * hash01(t.id, 2));
    const [x, y] = polar(radius, angle);
    const dot = s(
      'circle',
      {
        cx: x.toFixed(1),
        cy: y.toFixed(1),
        r: 2.5 + (t.priority ?? 3) * 1.2,
        class: `dot status-${t.status}`,
        'fill-opacity': (0.35 + 0.65 * ((t.relevance_score ?? 50) / 100)).toFixed(2),
        'data-id': t.id,
        tabindex: 0,
      },
      s('title', null, `${t.title} · ${t.status} · priority ${t.priority} · relevance ${t.relevance_score}`),
    );
    dot.addEventListener('click', () => select(t.id));
    return dot;
  });
  return s(
    'svg',
    { viewBox: `0 0 ${SIZE} ${SIZE}`, class: 'radar', id: 'radar', role: 'img', 'aria-label': 'Technology radar' },
    rings.reverse(),
    spokes,
    ringLabels,
    sectorLabels,
    counts,
    s('g', { class: 'dots' }, dots),
  );
}

const COLUMNS: [string, string, string | null][] = [
  ['title', 'Title', 'title'],
  ['domain', 'Domain', null],
  ['status', 'Status', null],
  ['priority', 'Priority', 'priority'],
  ['relevance_score', 'Relevance', 'relevance_score'],
  ['updated_at', 'Updated', 'updated_at'],
];

export function radarView(root: HTMLElement, ctx: Context, args: string[]): () => void {
  const abort = new AbortController();
  const filters: Filters = { domain: '', status: '', search: '', priority_min: '', sort: '-updated_at' };
  let cursors: (string | null)[] = [null];
  let selected: string | null = args[0] ?? null;
  let editing = false;

  const domainSel = select(DOMAINS, '', 'All domains');
  const statusSel = select(STATUSES, '', 'All statuses');
  const search = h('input', { type: 'search', id: 'search', placeholder: 'Search title, vendor, description…' });
  const prioritySel = select(['1', '2', '3', '4', '5'], '', 'Any priority');
  domainSel.id = 'filter-domain';
  statusSel.id = 'filter-status';
  prioritySel.id = 'filter-priority';
  const newButton = ctx.session.can_write ? h('button', { type: 'button', class: 'primary', id: 'new-technology' }, 'New technology') : null;
  const radarBox = h('div', { class: 'panel radar-box' });
  const radarNote = h('p', { class: 'muted', id: 'radar-note' });
  const table = h('table', { id: 'technologies', class: 'grid' });
  const pager = h('div', { class: 'pager' });
  const side = h('aside', { class: 'panel side', id: 'technology-panel' });
  replace(
    root,
    h('h1', null, 'Technology radar'),
    h(
      'div',
      { class: 'toolbar' },
      domainSel,
      statusSel,
      prioritySel,
      search,
      h('span', { class: 'spacer' }),
      newButton,
    ),
    h(
      'div',
      { class: 'radar-layout' },
      h('div', null, radarBox, radarNote),
      side,
      h('section', { class: 'panel table-box' }, table, pager),
    ),
  );

  const filterParams = () => ({
    project_id: ctx.project,
    domain: filters.domain,
    status: filters.status,
    search: filters.search,
    priority_min: filters.priority_min,
  });

  // Each loader draws only its newest call's answer: when the filters change while a
  // request is in flight, the older answer may arrive last and must not be drawn over
  // the newer one.
  let radarCalls = 0;
  let tableCalls = 0;
  const loadRadar = async () => {
    const call = ++radarCalls;
    const [dots, stats] = await Promise.all([
      get<Page>(`/api/v1/technologies${query({ ...filterParams(), sort: '-priority', limit: RADAR_CAP })}`, { signal: abort.signal }),
      get<{ technologies: { total: number; by_domain_status: Cell[] } }>(`/api/v1/dashboard/stats${query({ project_id: ctx.project })}`, {
        signal: abort.signal,
      }),
    ]);
    if (call !== radarCalls) return;
    replace(radarBox, drawRadar(dots.data.items, stats.data.technologies.by_domain_status ?? [], (id) => ctx.go(`#/radar/${id}`)));
    replace(
      radarNote,
      `${dots.data.items.length} of ${dots.data.total} matching technologies drawn (highest priority first, at most ${RADAR_CAP}); ` +
        `the number in each cell counts all ${stats.data.technologies.total} technologies of the project.`,
    );
  };

  const rows = new Map<string, HTMLTableRowElement>();
  const row = (t: Technology): HTMLTableRowElement =>
    h(
      'tr',
      { 'data-id': t.id, class: t.id === selected ? 'selected' : '' },
      h('td', null, h('a', { href: `#/radar/${t.id}`, class: 'title' }, t.title)),
      h('td', null, t.domain),
      h('td', null, h('span', { class: `pill status-${t.status}` }, t.status)),
      h('td', { class: 'num' }, String(t.priority)),
      h('td', { class: 'num' }, String(t.relevance_score)),
      h('td', null, when(t.updated_at)),
    );

  const loadTable = async () => {
    const call = ++tableCalls;
    const cursor = cursors[cursors.length - 1];
    const { data } = await get<Page>(
      `/api/v1/technologies${query({ ...filterParams(), sort: filters.sort, limit: PAGE, cursor })}`,
      { signal: abort.signal },
    );
    if (call !== tableCalls) return;
    const sortKey = filters.sort.replace(/^-/, '');
    const descending = filters.sort.startsWith('-');
    rows.clear();
    replace(
      table,
      h(
        'thead',
        null,
        h(
          'tr',
          null,
          COLUMNS.map(([, label, sortable]) => {
            const mark = sortable === sortKey ? (descending ? ' ▼' : ' ▲') : '';
            if (!sortable) return h('th', null, label);
            const button = h('button', { type: 'button', class: 'sort', 'data-sort': sortable }, label + mark);
            button.addEventListener('click', () => {
              filters.sort = sortable === sortKey && !descending ? `-${sortable}` : sortable;
              cursors = [null];
              void loadTable().catch(quiet);
            });
            return h('th', { 'aria-sort': mark ? (descending ? 'descending' : 'ascending') : 'none' }, button);
          }),
        ),
      ),
      h(
        'tbody',
        null,
        data.items.map((t) => {
          const tr = row(t);
          rows.set(t.id, tr);
          return tr;
        }),
        data.items.length === 0 ? h('tr', { class: 'empty' }, h('td', { colspan: 6, class: 'muted' }, 'No technologies match.')) : null,
      ),
    );
    const prev = h('button', { type: 'button', id: 'prev-page', disabled: cursors.length === 1 }, '← Previous');
    const next = h('button', { type: 'button', id: 'next-page', disabled: !data.next_cursor }, 'Next →');
    prev.addEventListener('click', () => {
      cursors.pop();
      void loadTable().catch(quiet);
    });
    next.addEventListener('click', () => {
      cursors.push(data.next_cursor);
      void loadTable().catch(quiet);
    });
    replace(pager, prev, h('span', { id: 'page-info' }, `Page ${cursors.length} · ${data.total} technologies`), next);
  };

  /** Shows the selected technology's card; after a 412, waits (up to 2 s) for a version newer than `stale`. */
  const loadSide = async (stale = 0) => {
    if (editing) return;
    if (!selected) {
      replace(side, h('p', { class: 'muted' }, 'Select a technology on the radar or in the table to see its card.'));
      return;
    }
    try {
      const path = `/api/v1/technologies/${encodeURIComponent(selected)}`;
      let { data } = await get<Technology>(path, { signal: abort.signal });
      // The read model may trail the write that made ours stale by a moment.
      for (let tries = 0; data.version <= stale && tries < 20; tries++) {
        await new Promise((r) => setTimeout(r, 100));
        ({ data } = await get<Technology>(path, { signal: abort.signal }));
      }
      if (!editing) replace(side, technologyCard(data, ctx, () => edit(data)));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) replace(side, h('p', { class: 'muted' }, 'This technology no longer exists.'));
      else throw err;
    }
  };

  const reloadAll = () => {
    void loadRadar().catch(quiet);
    void loadTable().catch(quiet);
    void loadSide().catch(quiet);
  };
  const reload = debounce(reloadAll, 250);
  /**
   * A change pushed on the socket: a row on screen is redrawn from it at once (and the
   * open card), then the radar and the page are re-read shortly after, once for a burst,
   * so order, filters and counts follow.
   */
  const onChange = (change: Change) => {
    const t = change.row as Technology | null;
    const shown = rows.get(change.id);
    if (shown && t && !change.deleted) {
      const fresh = row(t);
      shown.replaceWith(fresh);
      rows.set(t.id, fresh);
      if (selected === t.id && !editing) replace(side, technologyCard(t, ctx, () => edit(t)));
    }
    reload();
  };

  const edit = (current: Technology | null) => {
    editing = true;
    replace(
      side,
      technologyForm(ctx, current, {
        done: (id, stale = 0) => {
          editing = false;
          selected = id;
          if (id && location.hash !== `#/radar/${id}`) ctx.go(`#/radar/${id}`);
          void loadRadar().catch(quiet);
          void loadTable().catch(quiet);
          void loadSide(stale).catch(quiet);
        },
      }),
    );
  };

  const refilter = () => {
    filters.domain = domainSel.value;
    filters.status = statusSel.value;
    filters.priority_min = prioritySel.value;
    filters.search = search.value.trim();
    cursors = [null];
    reloadAll();
  };
  [domainSel, statusSel, prioritySel].forEach((el) => el.addEventListener('change', refilter));
  search.addEventListener('input', debounce(refilter, 250));
  newButton?.addEventListener('click', () => edit(null));

  reloadAll();
  const stop = ctx.live.subscribe(`technologies:${ctx.project}`, onChange);
  return () => {
    abort.abort();
    stop();
  };
}

function quiet(err: unknown): void {
  if (err instanceof DOMException && err.name === 'AbortError') return;
  if (err instanceof ApiError && err.status === 401) return;
  console.error(err);
}

function technologyCard(t: Technology, ctx: Context, onEdit: () => void): HTMLElement {
  const rows: [string, unknown][] = [
    ['Vendor', t.vendor],
    ['Domain', t.domain],
    ['Status', t.status],
    ['Priority', t.priority],
    ['Relevance', t.relevance_score],
    ['Maturity', t.maturity_level],
    ['Cost tier', t.cost_tier],
    ['Tags', (t.tags ?? []).join(', ')],
    ['Website', t.website_url],
    ['Updated', when(t.updated_at)],
    ['Version', t.version],
  ];
  const editButton = ctx.session.can_write ? h('button', { type: 'button', id: 'edit-technology' }, 'Edit') : null;
  editButton?.addEventListener('click', onEdit);
  return h(
    'article',
    { class: 'tech-card', id: 'technology-card', 'data-id': t.id },
    h('h2', { id: 'card-title' }, t.title),
    h('p', { class: 'description' }, t.description ?? ''),
    h('dl', null, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, show(v))])),
    h(
      'div',
      { class: 'actions' },
      editButton,
      ctx.session.can_audit ? h('a', { href: `#/history/technology/${t.id}`, class: 'button', id: 'history-link' }, 'History') : null,
    ),
  );
}

interface FormHooks {
  /** The form is closed: show `id`'s card (newer than version `stale`, after a 412). */
  done: (id: string | null, stale?: number) => void;
}

/** The create form (`current` null) or the edit form, which sends only changed fields with `If-Match`. */
function technologyForm(ctx: Context, current: Technology | null, hooks: FormHooks): HTMLElement {
  const inputs: Record<string, Input> = {
    title: text(current?.title, 'text', { maxlength: 255 }),
    vendor: text(current?.vendor),
    domain: select(DOMAINS, current?.domain ?? 'other'),
    status: select(STATUSES, current?.status ?? 'discovery'),
    priority: text(current?.priority ?? 3, 'number'),
    relevance_score: text(current?.relevance_score ?? 50, 'number'),
    maturity_level: select(MATURITY, current?.maturity_level, '—'),
    cost_tier: select(COST_TIERS, current?.cost_tier, '—'),
    tags: text((current?.tags ?? []).join(', ')),
    website_url: text(current?.website_url, 'text'),
    description: h('textarea', { rows: 3 }, current?.description ?? ''),
  };
  const formError = h('p', { class: 'form-error', id: 'form-error', role: 'alert' });
  const reloadButton = h('button', { type: 'button', id: 'reload-technology', hidden: true }, 'Reload');
  const form = h(
    'form',
    { class: 'tech-form', id: 'technology-form', novalidate: true },
    h('h2', null, current ? `Edit “${current.title}”` : 'New technology'),
    field('title', 'Title', inputs.title),
    field('vendor', 'Vendor', inputs.vendor),
    h('div', { class: 'row' }, field('domain', 'Domain', inputs.domain), field('status', 'Status', inputs.status)),
    h('div', { class: 'row' }, field('priority', 'Priority (1–5)', inputs.priority), field('relevance_score', 'Relevance (0–100)', inputs.relevance_score)),
    h('div', { class: 'row' }, field('maturity_level', 'Maturity', inputs.maturity_level), field('cost_tier', 'Cost tier', inputs.cost_tier)),
    field('tags', 'Tags', inputs.tags, 'Comma-separated'),
    field('website_url', 'Website', inputs.website_url),
    field('description', 'Description', inputs.description),
    formError,
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'submit', class: 'primary', id: 'save-technology' }, current ? 'Save' : 'Create'),
      h('button', { type: 'button', id: 'cancel-form' }, 'Cancel'),
      reloadButton,
    ),
  );
  form.querySelector('#cancel-form')?.addEventListener('click', () => hooks.done(current?.id ?? null));
  reloadButton.addEventListener('click', () => hooks.done(current?.id ?? null, current?.version ?? 0));

  const value = (name: string): unknown => {
    const raw = inputs[name].value.trim();
    if (name === 'priority' || name === 'relevance_score') return raw === '' ? null : Number(raw);
    if (name === 'tags') return raw === '' ? [] : raw.split(',').map((t) => t.trim());
    return raw === '' ? null : raw;
  };
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const body: Record<string, unknown> = {};
    for (const name of Object.keys(inputs)) {
      const v = value(name);
      if (!current) {
        if (v !== null && !(Array.isArray(v) && v.length === 0)) body[name] = v;
      } else if (JSON.stringify(v) !== JSON.stringify(current[name] ?? (name === 'tags' ? [] : null))) {
        body[name] = v;
      }
    }
    try {
      if (current) {
        if (Object.keys(body).length === 0) return hooks.done(current.id);
        await call('PATCH', `/api/v1/technologies/${encodeURIComponent(current.id)}`, {
          body,
          headers: { 'if-match': `"${current.version}"` },
        });
        hooks.done(current.id);
      } else {
        const { data } = await call<Technology>('POST', '/api/v1/technologies', {
          body: { project_id: ctx.project, ...body },
        });
        hooks.done(data.id);
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) {
        replace(
          formError,
          'Changed by someone else since you opened it — reload to see the current version, then make your change again.',
        );
        reloadButton.hidden = false;
        return;
      }
      showError(form, err, formError);
    }
  });
  return form;
}
