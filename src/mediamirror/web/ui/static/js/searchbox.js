// The search box at the top of every page: results as you type (an ARIA combobox).
//
// Keys: "/" anywhere (outside a text field) focuses it; ArrowDown/ArrowUp move through the
// results; Enter opens the highlighted one (or the full results page); Escape closes the
// list, and a second Escape leaves the box. Requests are debounced and the stale one is
// aborted, so a fast typist never sees an older answer replace a newer one.

import { api, isAbort } from "./api.js";
import { DATASET_TYPES, pill } from "./components.js";
import { h, icon } from "./dom.js";

const DEBOUNCE_MS = 150;
const SHOWN = 8;
let counter = 0;

/** Put the search box into `slot`; `navigate(url)` opens a page of the UI. */
export function mountSearchBox(slot, { navigate }) {
  const uid = `mm-search-${(counter += 1)}`;
  const input = h("input", {
    id: `${uid}-input`,
    class: "input searchbox-input",
    type: "search",
    role: "combobox",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "Search datasets and folders",
    "aria-autocomplete": "list",
    "aria-expanded": "false",
    "aria-controls": `${uid}-list`,
    "aria-keyshortcuts": "/",
    "data-testid": "searchbox",
  });
  const list = h("ul", { id: `${uid}-list`, class: "searchbox-list", role: "listbox", "aria-label": "Search results", hidden: true });
  const status = h("p", { class: "sr-only", role: "status", "aria-live": "polite" });
  const box = h(
    "div",
    { class: "searchbox", role: "search" },
    h("label", { class: "sr-only", for: input.id }, "Search the catalog"),
    h("span", { class: "searchbox-icon", "aria-hidden": "true" }, magnifier()),
    input,
    h("kbd", { class: "searchbox-key", "aria-hidden": "true", title: "Press / to search" }, "/"),
    list,
    status,
  );
  slot.replaceChildren(box);

  let options = []; // [{el, href}]
  let active = -1;
  let timer = null;
  let controller = null;
  let asked = ""; // the text the shown results answer

  const open = (yes) => {
    list.hidden = !yes;
    input.setAttribute("aria-expanded", yes ? "true" : "false");
    box.classList.toggle("is-open", yes);
    if (!yes) setActive(-1);
  };

  const setActive = (index) => {
    active = index;
    options.forEach((opt, i) => {
      const on = i === index;
      opt.el.setAttribute("aria-selected", on ? "true" : "false");
      opt.el.classList.toggle("is-active", on);
      if (on) opt.el.scrollIntoView({ block: "nearest" });
    });
    if (index >= 0) input.setAttribute("aria-activedescendant", options[index].el.id);
    else input.removeAttribute("aria-activedescendant");
  };

  const go = (href) => {
    controller?.abort();
    clearTimeout(timer);
    open(false);
    navigate(href);
  };

  const allHref = (q) => `/ui/search?q=${encodeURIComponent(q)}`;

  const draw = (q, body) => {
    options = [];
    list.replaceChildren();
    body.results.forEach((row, i) => {
      const el = option(`${uid}-opt-${i}`, row);
      options.push({ el, href: row.link });
      list.append(el);
    });
    if (!body.results.length) {
      list.append(h("li", { class: "searchbox-empty", role: "option", "aria-disabled": "true", "aria-selected": "false" }, `No folder or dataset matches “${q}”.`));
    }
    const all = h(
      "li",
      { id: `${uid}-opt-all`, class: "searchbox-option searchbox-all", role: "option", "aria-selected": "false", "data-href": allHref(q) },
      body.total > body.results.length ? `See all ${body.total.toLocaleString()} results` : "See all results",
      icon("chevron", "icon icon-sm"),
    );
    options.push({ el: all, href: allHref(q) });
    list.append(all);
    status.textContent = body.total ? `${body.total} result${body.total === 1 ? "" : "s"}` : "No results";
    open(true);
    setActive(-1);
  };

  const fetchResults = async (q) => {
    controller?.abort();
    controller = new AbortController();
    const signal = controller.signal;
    try {
      const body = await api(`search?q=${encodeURIComponent(q)}&limit=${SHOWN}`, { signal });
      if (signal.aborted || input.value.trim() !== q) return;
      asked = q;
      draw(q, body);
    } catch (err) {
      if (isAbort(err) || signal.aborted) return;
      options = [];
      const message = err.message || String(err);
      list.replaceChildren(h("li", { class: "searchbox-empty searchbox-error", role: "option", "aria-disabled": "true", "aria-selected": "false" }, message));
      status.textContent = message;
      open(true);
    }
  };

  input.addEventListener("input", () => {
    clearTimeout(timer);
    const q = input.value.trim();
    if (!q) {
      controller?.abort();
      asked = "";
      open(false);
      status.textContent = "";
      return;
    }
    timer = setTimeout(() => fetchResults(q), DEBOUNCE_MS);
  });

  input.addEventListener("keydown", (event) => {
    const q = input.value.trim();
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (list.hidden) {
        if (q && asked === q && options.length) open(true);
        else return;
      }
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      const count = options.length;
      if (count) setActive(active < 0 ? (step > 0 ? 0 : count - 1) : (active + step + count) % count);
    } else if (event.key === "Enter") {
      if (!q) return;
      event.preventDefault();
      go(active >= 0 && !list.hidden ? options[active].href : allHref(q));
    } else if (event.key === "Escape") {
      if (!list.hidden) {
        event.preventDefault();
        open(false);
      } else if (input.value) {
        event.preventDefault();
        input.value = "";
        asked = "";
      } else {
        input.blur();
      }
    }
  });

  input.addEventListener("focus", () => {
    if (input.value.trim() && asked === input.value.trim() && options.length) open(true);
  });
  box.addEventListener("focusout", (event) => {
    if (!box.contains(event.relatedTarget)) open(false);
  });
  // Keep the focus in the box while choosing with the pointer.
  list.addEventListener("mousedown", (event) => event.preventDefault());
  list.addEventListener("click", (event) => {
    const target = event.target.closest("[role=option]");
    if (!target) return;
    const found = options.find((opt) => opt.el === target);
    if (found) go(found.href);
  });

  document.addEventListener("keydown", (event) => {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    if (!input.isConnected || isTyping(event.target)) return;
    event.preventDefault();
    input.focus();
    input.select();
  });

  return { input, close: () => open(false) };
}

/** A magnifying glass (the shared icon set has none without a plus sign). */
export function magnifier() {
  const svg = icon("zoomOut");
  svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const circle = document.createElementNS(ns, "circle");
  for (const [k, v] of Object.entries({ cx: 11, cy: 11, r: 7 })) circle.setAttribute(k, String(v));
  const handle = document.createElementNS(ns, "path");
  handle.setAttribute("d", "M20 20l-3.5-3.5");
  svg.append(circle, handle);
  return svg;
}

function isTyping(el) {
  if (!el || el === document.body) return false;
  const tag = el.tagName;
  return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable;
}

function option(id, row) {
  const kind = row.type ? DATASET_TYPES[row.type] : null;
  const visual = row.thumbnail
    ? h("img", { class: "searchbox-thumb", src: row.thumbnail, alt: "", loading: "lazy", width: 40, height: 30, decoding: "async" })
    : h("span", { class: ["searchbox-thumb", "searchbox-kind"], "aria-hidden": "true" }, icon(kind ? kind.icon : row.type ? "file" : "folder", "icon icon-sm"));
  return h(
    "li",
    { id, class: "searchbox-option", role: "option", "aria-selected": "false", "data-href": row.link, "data-id": row.id },
    visual,
    h(
      "span",
      { class: "searchbox-text" },
      h("span", { class: "searchbox-name" }, row.name),
      h("span", { class: "searchbox-path" }, row.path),
    ),
    row.status ? pill(row.status) : h("span", { class: "searchbox-kindlabel" }, kind ? kind.label : "Folder"),
  );
}
