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

/**
 * Shows `err` at the field it names (`tags[1]` at `tags`, `parameters.steps` at that
 * parameter), or at the form when it names none of the form's fields.
 */
export function showError(form: HTMLElement, err: unknown, formError: HTMLElement): void {
  if (!(err instanceof ApiError)) {
    replace(formError, `Request failed: ${String(err instanceof Error ? err.message : err)}`);
    return;
  }
  const name = err.problem.field ?? '';
  const candidates = [name, name.replace(/\[\d+\]$/, ''), name.split('.')[0], name.split('[')[0]];
  for (const candidate of candidates) {
    if (!candidate) continue;
    const slot = form.querySelector<HTMLElement>(`.field[data-field="${CSS.escape(candidate)}"]`);
    if (slot) {
      slot.classList.add('invalid');
      const message = slot.querySelector('.field-error');
      if (message) message.textContent = err.message;
      slot.querySelector<HTMLElement>('input, select, textarea')?.focus();
      return;
    }
  }
  replace(formError, err.message);
}
