// Form helpers shared by the technology and job forms: labelled fields that know the
// API field they send, and problem+json errors placed next to the field they name.

import { ApiError } from '../api';
import { h, replace } from '../dom';

export type Input = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

/** A labelled field whose error slot is found by its API field name. */
export function field(name: string, label: string, input: Input, hint?: string): HTMLElement {
  input.id = `field-${name.replace(/[^a-z0-9_-]/gi, '_')}`;
  input.name = name;
  return h(
    'div',
    { class: 'field', 'data-field': name },
    h('label', { for: input.id }, label),
    input,
    hint ? h('small', { class: 'muted' }, hint) : null,
    h('p', { class: 'field-error', id: `error-${input.id.slice(6)}`, role: 'alert' }),
  );
}

export function select(options: string[], value: string | null | undefined, blank?: string): HTMLSelectElement {
  return h(
    'select',
    null,
    blank !== undefined ? h('option', { value: '' }, blank) : null,
    options.map((o) => h('option', { value: o, selected: o === value }, o)),
  );
}

export function text(value: string | number | null | undefined, type = 'text', extra: Record<string, string | number> = {}): HTMLInputElement {
  return h('input', { type, value: value ?? '', ...extra });
}

/** Clears the form's errors. */
export function clearErrors(form: HTMLElement): void {
  form.querySelectorAll('.field-error, .form-error').forEach((el) => (el.textContent = ''));
  form.querySelectorAll('.invalid').forEach((el) => el.classList.remove('invalid'));
}

/** The form's field slot for an API field name (`tags[1]` → `tags`), if it has one. */
function slotFor(form: HTMLElement, name: string): HTMLElement | null {
  const candidates = [name, name.replace(/\[\d+\]$/, ''), name.split('[')[0], name.split('.')[0]];
  for (const candidate of candidates) {
    if (!candidate) continue;
    const slot = form.querySelector<HTMLElement>(`.field[data-field="${CSS.escape(candidate)}"]`);
    if (slot) return slot;
  }
  return null;
}

/**
 * Shows each of `err`'s field errors at the field it names (`tags[1]` at `tags`,
 * `parameters.steps` at that parameter); what names none of the form's fields goes to
 * the form's own error line.
 */
export function showError(form: HTMLElement, err: unknown, formError: HTMLElement): void {
  if (!(err instanceof ApiError)) {
    replace(formError, `Request failed: ${String(err instanceof Error ? err.message : err)}`);
    return;
  }
  const errors = err.problem.errors?.length
    ? err.problem.errors
    : [{ field: err.problem.field ?? '', message: err.message }];
  const unplaced: string[] = [];
  let first: HTMLElement | null = null;
  for (const { field: name, message } of errors) {
    const slot = slotFor(form, name);
    if (!slot) {
      unplaced.push(name ? `${name}: ${message}` : message);
      continue;
    }
    slot.classList.add('invalid');
    const line = slot.querySelector('.field-error');
    if (line) line.textContent = line.textContent ? `${line.textContent}; ${message}` : message;
    first ??= slot;
  }
  if (unplaced.length > 0) replace(formError, unplaced.join('; '));
  first?.querySelector<HTMLElement>('input, select, textarea')?.focus();
}
