// The page's shell: sign-in (an API key, kept in sessionStorage only), then the header
// (views the role may use, the project, the socket's state) and the hash router.

import { ApiError, get, getKey, setKey, whenUnauthorized } from './api';
import { h, replace } from './dom';
import { Live } from './live';
import type { Context, Session, View } from './model';
import { dashboardView } from './views/dashboard';
import { historyView } from './views/history';
import { jobsView } from './views/jobs';
import { radarView } from './views/radar';

const root = document.getElementById('app') as HTMLElement;
let live: Live | null = null;
let stopView: () => void = () => {};

function signIn(message?: string): void {
  window.onhashchange = null;
  stopView();
  stopView = () => {};
  live?.close();
  live = null;
  setKey(null);
  const input = h('input', {
    id: 'api-key',
    name: 'api-key',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    placeholder: 'cc_…',
    required: true,
  });
  const error = h('p', { class: 'error', id: 'signin-error', role: 'alert' }, message ?? '');
  const form = h(
    'form',
    { class: 'signin', id: 'signin' },
    h('h1', null, 'CommandCenter'),
    h('p', null, 'Sign in with an API key. It stays in this tab only (sessionStorage) and is sent as a bearer token.'),
    h('label', { for: 'api-key' }, 'API key'),
    input,
    error,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    setKey(key);
    start().catch((err: unknown) => {
      if (err instanceof ApiError && err.status === 401) return; // signIn already shown
      signIn(`Cannot sign in: ${String(err instanceof Error ? err.message : err)}`);
    });
  });
  replace(root, form);
  input.focus();
}

whenUnauthorized((message) => signIn(message));

const VIEWS: Record<string, { title: string; view: View; audit?: boolean }> = {
  dashboard: { title: 'Dashboard', view: dashboardView },
  radar: { title: 'Radar', view: radarView },
  jobs: { title: 'Jobs', view: jobsView },
  history: { title: 'History', view: historyView, audit: true },
};

async function chooseProject(session: Session): Promise<number> {
  if (session.project_id !== null) return session.project_id;
  const { data } = await get<{ projects: { id: number; name: string }[] }>('/api/v1/projects');
  const saved = Number(sessionStorage.getItem('cc.project'));
  if (data.projects.some((p) => p.id === saved)) return saved;
  return data.projects[0]?.id ?? 1;
}

async function start(): Promise<void> {
  const { data: session } = await get<Session>('/api/v1/session');
  const project = await chooseProject(session);
  live = new Live();
  const status = h('span', { class: 'live off', id: 'live-state', title: 'Live updates' }, 'offline');
  live.onstate = (connected) => {
    status.textContent = connected ? 'live' : 'offline';
    status.className = connected ? 'live on' : 'live off';
  };
  const ctx: Context = { session, project, live, go: (hash) => (location.hash = hash) };
  const nav = h('nav', null);
  const main = h('main', { id: 'view' });
  let projectPicker: HTMLElement = h('span', { class: 'project', id: 'project' }, `Project ${project}`);
  if (session.project_id === null) {
    const { data } = await get<{ projects: { id: number; name: string }[] }>('/api/v1/projects');
    const select = h(
      'select',
      { id: 'project', 'aria-label': 'Project' },
      data.projects.map((p) => h('option', { value: p.id, selected: p.id === project }, `${p.id} · ${p.name}`)),
    );
    select.addEventListener('change', () => {
      sessionStorage.setItem('cc.project', select.value);
      location.reload();
    });
    projectPicker = select;
  }
  const signOut = h('button', { type: 'button', id: 'sign-out' }, 'Sign out');
  signOut.addEventListener('click', () => signIn('Signed out.'));
  replace(
    root,
    h(
      'header',
      null,
      h('span', { class: 'brand' }, 'CommandCenter'),
      nav,
      h('span', { class: 'spacer' }),
      projectPicker,
      h('span', { class: `role role-${session.role}`, id: 'role' }, session.role),
      status,
      signOut,
    ),
    main,
  );

  const route = () => {
    const [name = 'dashboard', ...args] = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean);
    const known = Object.hasOwn(VIEWS, name) ? VIEWS[name] : undefined;
    const entry = known && (!known.audit || session.can_audit) ? known : VIEWS.dashboard;
    const current = VIEWS[name] === entry ? name : 'dashboard';
    replace(
      nav,
      Object.entries(VIEWS)
        .filter(([, v]) => !v.audit || session.can_audit)
        .map(([id, v]) =>
          h('a', { href: `#/${id}`, id: `nav-${id}`, class: id === current ? 'active' : '' }, v.title),
        ),
    );
    stopView();
    main.replaceChildren();
    stopView = entry.view(main, ctx, VIEWS[name] === entry ? args : []);
  };
  window.onhashchange = route;
  route();
}

if (getKey()) {
  start().catch(() => signIn('Your session could not be restored; sign in again.'));
} else {
  signIn();
}
