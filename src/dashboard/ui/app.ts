// What every page gets: the session, the latest overview, navigation, notices and confirmations.
import type { Overview, RunState, Session } from '../api-types.ts';
import { ApiError } from './api.ts';
import { type Child, h, replace } from './dom.ts';

export interface Page {
  el: HTMLElement;
  /** A new overview snapshot arrived (every ~2 s while the stream is live). */
  tick?(overview: Overview): void;
  destroy?(): void;
}

export interface Ctx {
  session: Session;
  overview: Overview | null;
  canAct: boolean;
  navigate(href: string, replaceState?: boolean): void;
  notify(message: string, kind?: 'ok' | 'error'): void;
  confirm(options: ConfirmOptions): Promise<boolean>;
  /** Runs an action, says how it went; resolves to its result, or undefined when it failed. */
  act<T>(fn: () => Promise<T>, success: (result: T) => string): Promise<T | undefined>;
}

export interface ConfirmOptions {
  title: string;
  body: Child;
  confirmLabel: string;
  /** The button that closes the dialog without acting (default `Cancel`; say `Keep run` when the action is a cancel). */
  dismissLabel?: string;
  danger?: boolean;
  /** When set, the user must type this text to confirm. */
  typeToConfirm?: string;
}

const STATE_LABEL: Record<RunState, string> = {
  waiting: 'waiting',
  queued: 'queued',
  scheduled: 'scheduled',
  active: 'active',
  succeeded: 'succeeded',
  failed: 'failed',
  cancelled: 'cancelled',
};

export function stateBadge(state: RunState): HTMLSpanElement {
  return h('span', { class: `badge state-${state}` }, STATE_LABEL[state] ?? state);
}

let notices: HTMLElement | undefined;

/**
 * Brings the notices to the top of the top layer, above a modal dialog (a dialog opened with
 * showModal sits above everything else, notices included, until they are shown again after it).
 */
export function raiseNotices(): void {
  if (!notices?.childElementCount) return;
  if (notices.matches(':popover-open')) notices.hidePopover();
  notices.showPopover();
}

export function notify(message: string, kind: 'ok' | 'error' = 'ok'): void {
  if (!notices) {
    notices = h('div', { class: 'notices', role: 'status', 'aria-live': 'polite', popover: 'manual' });
    document.body.append(notices);
  }
  const n = h('div', { class: `notice notice-${kind}` }, message);
  notices.append(n);
  raiseNotices();
  setTimeout(
    () => {
      n.remove();
      if (!notices?.childElementCount) notices?.hidePopover();
    },
    kind === 'error' ? 8000 : 4000,
  );
}

/** Opens `dialog` as a modal, the notices still in sight above it. */
export function showModal(dialog: HTMLDialogElement): void {
  document.body.append(dialog);
  dialog.showModal();
  raiseNotices();
}

export function confirmDialog(o: ConfirmOptions): Promise<boolean> {
  return new Promise((resolve) => {
    const input = o.typeToConfirm
      ? h('input', { type: 'text', class: 'input', autocomplete: 'off', spellcheck: 'false', 'aria-label': 'Type to confirm' })
      : null;
    const ok = h('button', { type: 'submit', class: o.danger ? 'btn btn-danger' : 'btn btn-primary', value: 'ok' }, o.confirmLabel);
    const cancel = h('button', { type: 'button', class: 'btn', value: 'cancel' }, o.dismissLabel ?? 'Cancel');
    if (input) {
      ok.disabled = true;
      input.addEventListener('input', () => {
        ok.disabled = input.value !== o.typeToConfirm;
      });
    }
    const form = h(
      'form',
      { method: 'dialog', class: 'dialog-body' },
      h('h2', null, o.title),
      h(
        'div',
        { class: 'dialog-scroll' },
        h('div', { class: 'dialog-text' }, o.body),
        input && h('label', { class: 'field' }, h('span', null, 'Type ', h('code', null, o.typeToConfirm ?? ''), ' to confirm'), input),
      ),
      h('div', { class: 'dialog-actions' }, cancel, ok),
    );
    const dialog = h('dialog', { class: 'dialog' }, form);
    let result = false;
    form.addEventListener('submit', (e) => {
      if (input && input.value !== o.typeToConfirm) {
        e.preventDefault();
        return;
      }
      result = true;
    });
    cancel.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(result);
    });
    showModal(dialog);
    (input ?? cancel).focus();
  });
}

export async function act<T>(fn: () => Promise<T>, success: (result: T) => string): Promise<T | undefined> {
  try {
    const r = await fn();
    notify(success(r), 'ok');
    return r;
  } catch (err) {
    const msg = err instanceof ApiError ? err.message : String(err);
    notify(msg, 'error');
    return undefined;
  }
}

/** A block that shows a loading line, then content or the error. */
export function loading(): HTMLElement {
  return h('div', { class: 'empty' }, 'Loading…');
}

export function errorBox(err: unknown): HTMLElement {
  const msg = err instanceof ApiError ? err.message : err instanceof Error ? err.message : String(err);
  return h('div', { class: 'error-box', role: 'alert' }, msg);
}

export function setContent(el: HTMLElement, ...children: Child[]): void {
  replace(el, ...children);
}
