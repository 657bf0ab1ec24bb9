// The one way the page talks to the API: the key from sessionStorage as a bearer token,
// problem+json errors as `ApiError` (with the field they name), read-your-writes through
// `X-CC-Min-Position`, and a 401 anywhere sends the page back to sign-in.

const KEY = 'cc.key';

/** An application/problem+json answer. */
export interface Problem {
  status?: number;
  title?: string;
  detail?: string;
  field?: string;
  /** Every invalid field, when a body had several. */
  errors?: { field: string; message: string }[];
}

/** A refused request. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
  ) {
    super(problem.detail ?? problem.title ?? `HTTP ${status}`);
  }
}

/**
 * The position of this tab's latest write. Reads send it as `X-CC-Min-Position`, so the
 * page always shows its own writes (the API waits for the read model to apply them).
 */
let lastWrite = '';

let onUnauthorized: (message: string) => void = () => {};

/** Called on any 401, with a message for the sign-in form. */
export function whenUnauthorized(handler: (message: string) => void): void {
  onUnauthorized = handler;
}

/** Sends the page back to sign-in with `message` (a refused key seen outside a request). */
export function unauthorized(message: string): void {
  onUnauthorized(message);
}

export function getKey(): string | null {
  return sessionStorage.getItem(KEY);
}

export function setKey(key: string | null): void {
  if (key === null) sessionStorage.removeItem(KEY);
  else sessionStorage.setItem(KEY, key);
}

export interface Answer<T> {
  data: T;
  status: number;
  headers: Headers;
}

export interface Options {
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** Sends a request; resolves with the parsed JSON body, rejects with `ApiError`. */
export async function call<T>(method: string, path: string, options: Options = {}): Promise<Answer<T>> {
  const headers: Record<string, string> = { accept: 'application/json', ...options.headers };
  if (method === 'GET' && lastWrite) headers['x-cc-min-position'] = lastWrite;
  const key = getKey();
  if (key) headers.authorization = `Bearer ${key}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(options.body);
  }
  const response = await fetch(path, { method, headers, body, signal: options.signal, credentials: 'omit' });
  const text = await response.text();
  let parsed: unknown = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { detail: text };
    }
  }
  if (!response.ok) {
    const problem = (parsed ?? {}) as Problem;
    if (response.status === 401) {
      onUnauthorized(
        `The API key was refused (${problem.detail ?? 'HTTP 401'}). Sign in with a valid key.`,
      );
    }
    throw new ApiError(response.status, problem);
  }
  const position = response.headers.get('x-cc-position');
  if (method !== 'GET' && position && position > lastWrite) lastWrite = position;
  return { data: parsed as T, status: response.status, headers: response.headers };
}

export const get = <T>(path: string, options?: Options) => call<T>('GET', path, options);

/** `?a=1&b=2` from the defined, non-empty values. */
export function query(params: Record<string, string | number | null | undefined>): string {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== '') search.set(k, String(v));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}
