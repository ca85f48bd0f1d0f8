// Small building blocks shared by the pages.

import { isAbort } from "./api.js";
import { fmtNumber, fmtSeconds, h, icon, timeEl } from "./dom.js";

const TONES = {
  ready: "ok",
  success: "ok",
  applied: "ok",
  sent: "ok",
  pending: "warn",
  queued: "warn",
  rejected: "warn",
  error: "err",
  failed: "err",
  new: "info",
  test: "info",
  running: "run",
  syncing: "run",
  canceled: "neutral",
  empty: "neutral",
  duplicate: "neutral",
  stale: "neutral",
  ignored: "neutral",
  interrupted: "neutral",
};

const LABELS = {
  ready: "Ready",
  pending: "Pending",
  error: "Error",
  new: "New",
  empty: "Empty",
  queued: "Queued",
  running: "Running",
  success: "Success",
  canceled: "Canceled",
  syncing: "Syncing",
  interrupted: "Interrupted",
};

/** A coloured state label with a dot: ready, error, queued, running… */
export function pill(state, label) {
  const key = String(state || "").toLowerCase();
  const text = label ?? LABELS[key] ?? (key ? key.charAt(0).toUpperCase() + key.slice(1) : "—");
  return h(
    "span",
    { class: ["pill", `pill-${TONES[key] || "neutral"}`], "data-state": key },
    h("span", { class: "pill-dot", "aria-hidden": "true" }),
    text,
  );
}

export const DATASET_TYPES = {
  video: { icon: "video", label: "Video" },
  "image-sequence": { icon: "frames", label: "Image sequence" },
  "large-image": { icon: "image", label: "Large image" },
};

/** The dataset kind with its icon. */
export function typeBadge(type) {
  const known = DATASET_TYPES[type] || { icon: "file", label: String(type) };
  return h(
    "span",
    { class: "badge", "data-type": type },
    icon(known.icon, "icon icon-sm"),
    known.label,
  );
}

export function progressBar(percent, state, label = "Progress") {
  const value = Math.max(0, Math.min(100, Number(percent) || 0));
  return h(
    "div",
    {
      class: ["progress", `progress-${TONES[state] || "neutral"}`],
      role: "progressbar",
      "aria-label": label,
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": Math.round(value),
    },
    h("div", { class: "progress-fill", style: { width: `${value}%` } }),
  );
}

/** Title row of a page: breadcrumbs, heading, subtitle and actions. */
export function pageHeader({ crumbs, title, badges, subtitle, actions }) {
  return h(
    "header",
    { class: "page-header" },
    crumbs ? breadcrumbs(crumbs) : null,
    h(
      "div",
      { class: "page-title-row" },
      h(
        "div",
        { class: "page-title-block" },
        h("h1", { class: "page-title" }, title),
        badges && badges.length ? h("div", { class: "page-badges" }, badges) : null,
      ),
      actions && actions.length ? h("div", { class: "page-actions" }, actions) : null,
    ),
    subtitle ? h("p", { class: "page-subtitle" }, subtitle) : null,
  );
}

/** crumbs: [{label, href}] — the last one is the current page. */
export function breadcrumbs(crumbs) {
  const list = h("ol", { class: "crumbs" });
  crumbs.forEach((crumb, i) => {
    const last = i === crumbs.length - 1;
    list.append(
      h(
        "li",
        null,
        last || !crumb.href
          ? h("span", { "aria-current": last ? "page" : null }, crumb.label)
          : h("a", { href: crumb.href }, crumb.label),
        last ? null : icon("chevron", "icon crumb-sep"),
      ),
    );
  });
  return h("nav", { class: "breadcrumbs", "aria-label": "Breadcrumb" }, list);
}

export function emptyState({ iconName = "inbox", title, body, actions }) {
  return h(
    "div",
    { class: "empty" },
    h("div", { class: "empty-icon" }, icon(iconName, "icon icon-lg")),
    h("h2", { class: "empty-title" }, title),
    body ? h("div", { class: "empty-body" }, body) : null,
    actions ? h("div", { class: "empty-actions" }, actions) : null,
  );
}

export function loading(label = "Loading…") {
  return h("div", { class: "loading", role: "status" }, h("span", { class: "spinner" }), label);
}

/** A page that could not load: the server's message and a way to try again. */
export function errorState(err, retry) {
  return emptyState({
    iconName: "alert",
    title: err.status === 404 ? "Not found" : "Something went wrong",
    body: h("p", null, err.message || String(err)),
    actions: retry ? h("button", { class: "btn", onClick: retry }, icon("refresh"), "Try again") : null,
  });
}

export function card(title, body, { actions, className } = {}) {
  return h(
    "section",
    { class: ["card", className] },
    title
      ? h(
          "div",
          { class: "card-head" },
          h("h2", { class: "card-title" }, title),
          actions ? h("div", { class: "card-actions" }, actions) : null,
        )
      : null,
    body,
  );
}

/** "Showing 51–100 of 312" and page links; hrefFor(offset) gives each page's URL. */
export function pagination({ total, offset, limit, hrefFor, noun = "entries" }) {
  if (!total) return null;
  const first = offset + 1;
  const last = Math.min(offset + limit, total);
  const pages = Math.ceil(total / limit);
  const current = Math.floor(offset / limit);
  const nav = h("nav", { class: "pager", "aria-label": "Pages" });
  const link = (page, label, { rel, disabled, active } = {}) =>
    disabled
      ? h("span", { class: "pager-link is-disabled", "aria-disabled": "true" }, label)
      : h(
          "a",
          {
            class: ["pager-link", active && "is-active"],
            href: hrefFor(page * limit),
            rel,
            "aria-current": active ? "page" : null,
          },
          label,
        );
  if (pages > 1) {
    nav.append(link(current - 1, "‹ Previous", { rel: "prev", disabled: current === 0 }));
    for (const page of pageWindow(current, pages)) {
      nav.append(
        page === null
          ? h("span", { class: "pager-gap" }, "…")
          : link(page, String(page + 1), { active: page === current }),
      );
    }
    nav.append(link(current + 1, "Next ›", { rel: "next", disabled: current >= pages - 1 }));
  }
  return h(
    "div",
    { class: "pager-row" },
    h(
      "p",
      { class: "pager-summary" },
      `Showing ${fmtNumber(first)}–${fmtNumber(last)} of ${fmtNumber(total)} ${total === 1 ? noun.replace(/s$/, "") : noun}`,
    ),
    nav,
  );
}

function pageWindow(current, pages) {
  const wanted = new Set([0, pages - 1, current - 1, current, current + 1]);
  const out = [];
  let previous = -1;
  for (let page = 0; page < pages; page += 1) {
    if (!wanted.has(page)) continue;
    if (page - previous > 1) out.push(null);
    out.push(page);
    previous = page;
  }
  return out;
}

/**
 * A button for a change that needs an admin token. Viewers see it locked, and a click
 * asks the server anyway, so they read its own 403 message rather than a guess.
 */
export function actionButton(ctx, { label, iconName, variant = "", onClick, adminOnly = true, attrs }) {
  const locked = adminOnly && !ctx.isAdmin;
  const button = h(
    "button",
    {
      type: "button",
      class: ["btn", variant, locked && "is-locked"],
      "aria-disabled": locked ? "true" : null,
      title: locked ? "Needs an admin token (you are signed in as a viewer)" : null,
      ...attrs,
    },
    icon(locked ? "lock" : iconName),
    h("span", { class: "btn-label" }, label),
  );
  button.addEventListener("click", () => runBusy(ctx, button, onClick));
  return button;
}

/** Show a button busy while fn runs; errors go to the page's banner. */
export async function runBusy(ctx, button, fn) {
  if (button.classList.contains("is-busy")) return;
  button.classList.add("is-busy");
  button.setAttribute("aria-busy", "true");
  try {
    await fn();
  } catch (err) {
    if (!isAbort(err)) ctx.banner.error(err.message || String(err));
  } finally {
    button.classList.remove("is-busy");
    button.removeAttribute("aria-busy");
  }
}

/** A <select> whose change calls onChange(value). */
export function select({ label, value, options, onChange, id }) {
  const el = h(
    "select",
    { class: "select", id, onChange: () => onChange(el.value) },
    options.map(([v, text]) => h("option", { value: v }, text)),
  );
  el.value = value;
  return h("label", { class: "field-inline" }, h("span", { class: "field-label" }, label), el);
}

// A source's last sync runs, newest first (the sources list and the source page).
export function runsTable(runs) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "table table-sm" },
      h("caption", { class: "sr-only" }, "Last sync runs, newest first"),
      h("thead", null, h("tr", null, ["Started", "State", "Added", "Changed", "Deleted", "Unchanged", "Took"].map((t, i) => h("th", { scope: "col", class: i > 1 ? "num" : null }, t)))),
      h(
        "tbody",
        null,
        runs.map((r) =>
          h(
            "tr",
            { "data-run": r.id, "data-state": r.state },
            h("td", null, timeEl(r.started_at)),
            h("td", null, pill(r.state, r.state === "success" ? "Synced" : null), r.error ? h("div", { class: "sd-run-error" }, r.error) : null),
            [r.added, r.changed, r.deleted, r.unchanged].map((n) => h("td", { class: "num" }, fmtNumber(n))),
            h("td", { class: "num" }, fmtSeconds(r.seconds)),
          ),
        ),
      ),
    ),
  );
}
