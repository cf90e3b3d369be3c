// A tiny DOM builder: elements from a tag, attributes and children. Text always goes in as text
// (never as HTML), so nothing read from a run can inject markup.

export type Child = Node | string | number | null | undefined | false | Child[];

export interface Attrs {
  class?: string | undefined;
  title?: string | undefined;
  href?: string | undefined;
  // biome-ignore lint/suspicious/noExplicitAny: event handlers and free-form attributes
  [name: string]: any;
}

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2).toLowerCase(), v as EventListener);
      else if (k === 'dataset' && typeof v === 'object') Object.assign(el.dataset, v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

export function append(parent: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(parent, c);
    else parent.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/** Text that may be long: cut with an ellipsis by CSS, the whole text in a tooltip. */
export function trunc(text: string, cls = ''): HTMLSpanElement {
  return h('span', { class: `trunc ${cls}`.trim(), title: text }, text);
}

/** A link inside the dashboard (handled by the router, no reload). */
export function link(href: string, ...children: Child[]): HTMLAnchorElement {
  return h('a', { href, 'data-link': true }, ...children);
}
