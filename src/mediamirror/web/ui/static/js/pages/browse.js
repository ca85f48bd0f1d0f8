// The folder browser: breadcrumbs, sub-folders and datasets (sorted, 50 a page) as a list
// or a grid of thumbnails, bulk post-processing of selected datasets (admins), and files.
//
// Listings stay paginated by the server (50 rows a page), so a folder of 100,000 datasets
// costs one page of rows and at most 50 lazily loaded thumbnails.

import {
  DATASET_TYPES,
  actionButton,
  card,
  emptyState,
  pageHeader,
  pagination,
  pill,
  select,
  typeBadge,
} from "../components.js";
import { fmtBytes, h, icon, plural, timeEl } from "../dom.js";

const PAGE = 50;
const SORTS = [
  ["name", "Name (A–Z)"],
  ["-name", "Name (Z–A)"],
  ["-updated", "Recently updated"],
  ["updated", "Least recently updated"],
];
const VIEW_KEY = "mediamirror.browse.view";
const VIEWS = [
  ["list", "List", "viewList"],
  ["grid", "Grid", "viewGrid"],
];

export async function render(page, ctx) {
  const id = ctx.params.id;
  const sort = SORTS.some(([v]) => v === ctx.query.get("sort")) ? ctx.query.get("sort") : "name";
  const offset = pageOffset(ctx.query.get("page"));
  const itemOffset = pageOffset(ctx.query.get("ipage"));
  const listing = `offset=${offset}&limit=${PAGE}&sort=${encodeURIComponent(sort)}`;

  let folder = null;
  let children;
  let items = null;
  // Source mounts get a badge of their own; the listing still works without it.
  const mounts = ctx
    .api("sources")
    .then((list) => new Map(list.map((src) => [src.mount, src.name])))
    .catch(() => new Map());
  if (id === null) {
    children = await ctx.api(`folders?${listing}`);
  } else {
    [folder, children, items] = await Promise.all([
      ctx.api(`folders/${id}`),
      ctx.api(`folders/${id}/children?${listing}`),
      ctx.api(`folders/${id}/items?offset=${itemOffset}&limit=${PAGE}`),
    ]);
    if (folder.type) {
      ctx.navigate(`/ui/datasets/${id}`, { replace: true });
      return;
    }
  }

  ctx.setTitle(folder ? folder.name : "Browse");
  const hrefFor = (changes) => {
    const q = new URLSearchParams(ctx.query);
    for (const [k, v] of Object.entries(changes)) {
      if (v === null || v === undefined || v === "" || v === 0) q.delete(k);
      else q.set(k, String(v));
    }
    const search = q.toString();
    return location.pathname + (search ? `?${search}` : "");
  };

  const empty = folder && !children.total && !items.total;
  const parts = [
    header(ctx, folder, children, items),
    foldersCard(ctx, folder, children, sort, offset, hrefFor, await mounts),
    items && items.total ? itemsCard(items, itemOffset, hrefFor) : null,
    empty
      ? emptyState({
          iconName: "folder",
          title: "This folder is empty",
          body: h("p", null, "Everything that was here has been deleted from the bucket."),
        })
      : null,
  ];
  page.replaceChildren(...parts.filter(Boolean));
}

function pageOffset(raw) {
  const n = Number.parseInt(raw || "1", 10);
  return Number.isFinite(n) && n > 1 ? (n - 1) * PAGE : 0;
}

function header(ctx, folder, children, items) {
  if (!folder) {
    return pageHeader({
      title: "Catalog",
      subtitle: "Everything mirrored from your sources. Open a folder, or a dataset to view it.",
    });
  }
  const crumbs = [
    { label: "Catalog", href: "/ui/browse" },
    ...folder.breadcrumbs.map((b) => ({ label: b.name, href: b.id ? `/ui/browse/${b.id}` : null })),
  ];
  const counts = folder.counts || {};
  return pageHeader({
    crumbs,
    title: h("span", { class: "title-with-icon" }, icon("folder", "icon icon-title"), folder.name),
    subtitle: h(
      "span",
      null,
      h("code", { class: "path" }, folder.path),
      h("span", { class: "dot-sep" }, "·"),
      plural(counts.folders ?? children.total, "folder"),
      h("span", { class: "dot-sep" }, "·"),
      plural(counts.items ?? (items ? items.total : 0), "file"),
    ),
    actions: [
      actionButton(ctx, {
        label: "Post-process",
        iconName: "zap",
        attrs: { "data-action": "postprocess", title: ctx.isAdmin ? "Queue the processors of every dataset below marked for post-processing" : null },
        onClick: async () => {
          const result = await ctx.api(`folders/${folder.id}/postprocess`, { method: "POST", body: {} });
          ctx.toast(capitalize(result.message || `queued ${result.queued.length} job(s)`));
        },
      }),
    ],
  });
}

// -- the listing: list or grid, with a selection for admins --------------------------------

function storedView() {
  try {
    return localStorage.getItem(VIEW_KEY) === "grid" ? "grid" : "list";
  } catch {
    return "list"; // storage disabled: the default view, every time
  }
}

function storeView(view) {
  try {
    localStorage.setItem(VIEW_KEY, view);
  } catch {
    /* storage disabled: the choice lasts for this page only */
  }
}

function foldersCard(ctx, folder, children, sort, offset, hrefFor, mounts) {
  if (!children.total) {
    if (!folder) {
      return emptyState({
        iconName: "database",
        title: "Your catalog is empty",
        body: h(
          "p",
          null,
          "Add a source (an S3, MinIO or GCS bucket, or a local folder) and sync it: its videos, image folders and large images appear here as datasets.",
        ),
        actions: h("a", { class: "btn btn-primary", href: "/ui/sources" }, icon("database"), "Go to sources"),
      });
    }
    return null;
  }
  const listing = {
    ctx,
    rows: children.folders,
    mounts,
    view: storedView(),
    selection: ctx.isAdmin ? new Selection(children.folders.filter((f) => f.type)) : null,
  };
  const body = h("div", { class: "listing-body" });
  if (listing.selection) listing.selection.root = body;
  const draw = () => {
    body.replaceChildren(listing.view === "grid" ? gridView(listing) : listView(listing));
    listing.selection?.sync();
  };
  const toggle = viewToggle(listing.view, (view) => {
    listing.view = view;
    storeView(view);
    draw();
  });
  draw();
  const sorter = select({
    label: "Sort",
    id: "sort",
    value: sort,
    options: SORTS,
    onChange: (value) => ctx.navigate(hrefFor({ sort: value === "name" ? null : value, page: null })),
  });
  const datasets = children.folders.filter((f) => f.type).length;
  const listingCard = card(
    folder ? "Folders and datasets" : "Top-level folders",
    [
      listing.selection && listing.selection.size ? selectionBar(ctx, listing.selection) : null,
      body,
      pagination({
        total: children.total,
        offset,
        limit: PAGE,
        noun: datasets === children.folders.length ? "datasets" : "folders",
        hrefFor: (o) => hrefFor({ page: o / PAGE + 1 }),
      }),
    ],
    { actions: [toggle, sorter], className: "listing-card" },
  );
  // Escape anywhere in the listing clears the selection (a select's own Escape aside).
  listingCard.addEventListener("keydown", (event) => {
    const selection = listing.selection;
    if (event.key !== "Escape" || !selection || !selection.ids.size) return;
    if (event.target.closest("select")) return;
    selection.setAll(false);
  });
  return listingCard;
}

/** Two toggle buttons (aria-pressed) choosing the list or the grid view. */
function viewToggle(current, onChange) {
  const buttons = VIEWS.map(([view, label, iconName]) =>
    h(
      "button",
      {
        type: "button",
        class: "view-btn",
        "data-view": view,
        "aria-pressed": String(view === current),
        title: `${label} view`,
      },
      viewIcon(iconName),
      h("span", { class: "view-label" }, label),
    ),
  );
  for (const button of buttons) {
    button.addEventListener("click", () => {
      for (const other of buttons) other.setAttribute("aria-pressed", String(other === button));
      onChange(button.dataset.view);
    });
  }
  return h("div", { class: "view-toggle", role: "group", "aria-label": "View" }, buttons);
}

function viewIcon(name) {
  const paths = {
    viewList: ["M9 6h11", "M9 12h11", "M9 18h11", "M4 6h.01", "M4 12h.01", "M4 18h.01"],
    viewGrid: ["M4 4h6.5v6.5H4z", "M13.5 4H20v6.5h-6.5z", "M4 13.5h6.5V20H4z", "M13.5 13.5H20V20h-6.5z"],
  }[name];
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  // Drawn like dom.js's icons: strokes in the text colour.
  const stroke = { fill: "none", stroke: "currentColor", "stroke-width": "1.8", "stroke-linecap": "round", "stroke-linejoin": "round" };
  for (const [k, v] of Object.entries(stroke)) svg.setAttribute(k, v);
  for (const d of paths) {
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

function listView(listing) {
  const { ctx, rows, mounts, selection } = listing;
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "table table-hover", "data-testid": "folders" },
      h(
        "thead",
        null,
        h("tr", null, h("th", null, "Name"), h("th", { class: "hide-xs" }, "Kind"), h("th", null, "Status"), h("th", { class: "hide-sm" }, "Updated")),
      ),
      h("tbody", null, rows.map((f) => folderRow(ctx, f, mounts.get(f.path), selection))),
    ),
  );
}

function folderRow(ctx, f, source, selection) {
  const href = f.type ? `/ui/datasets/${f.id}` : `/ui/browse/${f.id}`;
  const link = h("a", { href, class: "row-link" }, f.name);
  const row = h(
    "tr",
    { class: ["row-clickable", f.state === "empty" && "is-empty"], "data-folder-id": f.id, "data-type": f.type || "folder" },
    h(
      "td",
      null,
      h(
        "div",
        { class: "cell-name" },
        selection ? (f.type ? selection.checkbox(f) : h("span", { class: "check-spacer", "aria-hidden": "true" })) : null,
        thumb(f, "thumb-sm"),
        link,
      ),
    ),
    h("td", { class: "hide-xs" }, kindLabel(f, source)),
    h("td", null, statusPills(f)),
    h("td", { class: "hide-sm muted" }, timeEl(f.updated_at)),
  );
  row.addEventListener("click", (event) => {
    if (event.target.closest("a, button, input, label")) return;
    ctx.navigate(href);
  });
  return row;
}

function gridView(listing) {
  const { rows, mounts, selection } = listing;
  return h(
    "ul",
    { class: "thumb-grid", "data-testid": "folders-grid", "aria-label": "Folders and datasets" },
    rows.map((f) => {
      const href = f.type ? `/ui/datasets/${f.id}` : `/ui/browse/${f.id}`;
      return h(
        "li",
        { class: ["thumb-card", f.state === "empty" && "is-empty"], "data-folder-id": f.id, "data-type": f.type || "folder" },
        h("div", { class: "thumb-frame" }, thumb(f, "thumb-lg")),
        selection && f.type ? h("div", { class: "thumb-check" }, selection.checkbox(f)) : null,
        h(
          "div",
          { class: "thumb-body" },
          h("a", { href, class: "thumb-link", title: f.name }, f.name),
          h("div", { class: "thumb-facts" }, kindLabel(f, mounts.get(f.path)), statusPills(f)),
        ),
      );
    }),
  );
}

/** The dataset's thumbnail (lazy, fixed size), or its kind's icon when it has none. */
function thumb(f, size) {
  const placeholder = () => {
    const kind = DATASET_TYPES[f.type];
    return h(
      "span",
      { class: ["thumb", size, "thumb-none", "kind-icon", f.type ? `kind-${f.type}` : "kind-folder"], "data-thumb": "none" },
      icon(kind ? kind.icon : "folder", size === "thumb-lg" ? "icon icon-lg" : "icon"),
    );
  };
  if (!f.thumbnail) return placeholder();
  const [width, height] = size === "thumb-lg" ? [320, 240] : [48, 36];
  const img = h("img", {
    class: ["thumb", size],
    src: f.thumbnail,
    alt: `Thumbnail of ${f.name}`,
    loading: "lazy",
    decoding: "async",
    width,
    height,
  });
  // A thumbnail gone from the output store: the icon, not a broken picture.
  img.addEventListener("error", () => img.replaceWith(placeholder()), { once: true });
  return img;
}

function kindLabel(f, source) {
  if (f.type) return typeBadge(f.type);
  if (source) {
    return h("span", { class: "badge badge-source", title: `Mount of source ${source}` }, icon("database", "icon icon-sm"), "Source");
  }
  return h("span", { class: "muted" }, "Folder");
}

function statusPills(f) {
  return h(
    "span",
    { class: "pill-row" },
    f.status ? pill(f.status) : null,
    f.state === "empty" ? pill("empty", "Empty") : null,
    !f.status && f.state !== "empty" ? h("span", { class: "muted" }, "—") : null,
  );
}

/** The datasets of this page an admin selected, and the checkboxes that show it. */
class Selection {
  constructor(datasets) {
    this.datasets = datasets;
    this.ids = new Set();
    this.listeners = [];
    this.root = null; // the element holding the checkboxes
  }

  get size() {
    return this.datasets.length;
  }

  checkbox(f) {
    const box = h("input", {
      type: "checkbox",
      class: "select-box",
      "data-select": f.id,
      "aria-label": `Select ${f.name}`,
    });
    box.checked = this.ids.has(f.id);
    box.addEventListener("change", () => {
      if (box.checked) this.ids.add(f.id);
      else this.ids.delete(f.id);
      this.sync();
    });
    return h("label", { class: "check-hit" }, box);
  }

  setAll(on) {
    this.ids = new Set(on ? this.datasets.map((f) => f.id) : []);
    this.sync();
  }

  /** Checkboxes on the page show the selection (after a view change too). */
  sync() {
    for (const box of this.root ? this.root.querySelectorAll("input[data-select]") : []) {
      box.checked = this.ids.has(Number(box.dataset.select));
    }
    for (const fn of this.listeners) fn();
  }
}

function selectionBar(ctx, selection) {
  const all = h("input", { type: "checkbox", id: "select-all", class: "select-box", "data-testid": "select-all" });
  all.addEventListener("change", () => selection.setAll(all.checked));
  const count = h("span", { class: "selection-count", "aria-live": "polite" });
  const send = (kind) => async () => {
    const ids = [...selection.ids];
    if (!ids.length) return;
    const result = await ctx.api(`bulk/${kind}`, { method: "POST", body: { folder_ids: ids } });
    const fallback = `queued ${result.queued ?? 0} job(s), skipped ${result.skipped ?? 0}`;
    ctx.toast(capitalize(result.message || fallback));
    selection.setAll(false);
  };
  const actions = h(
    "div",
    { class: "selection-actions" },
    actionButton(ctx, {
      label: "Post-process",
      iconName: "zap",
      variant: "btn-sm btn-primary",
      attrs: { "data-action": "bulk-postprocess", title: "Queue the processors of the selected datasets" },
      onClick: send("postprocess"),
    }),
    actionButton(ctx, {
      label: "Reprocess",
      iconName: "refresh",
      variant: "btn-sm",
      attrs: { "data-action": "bulk-reprocess", title: "Run the processors of the selected datasets again" },
      onClick: send("reprocess"),
    }),
    h(
      "button",
      { type: "button", class: "btn btn-sm btn-ghost", "data-action": "clear-selection", onClick: () => selection.setAll(false) },
      icon("x"),
      "Clear",
    ),
  );
  const bar = h(
    "div",
    { class: "selection-bar", role: "region", "aria-label": "Selection", "data-testid": "selection-bar" },
    h("label", { class: "select-all", for: "select-all" }, all, h("span", null, `Select all ${plural(selection.size, "dataset")} on this page`)),
    count,
    actions,
  );
  const update = () => {
    const n = selection.ids.size;
    all.checked = n > 0 && n === selection.size;
    all.indeterminate = n > 0 && n < selection.size;
    count.textContent = n ? `${plural(n, "dataset")} selected` : "";
    actions.hidden = n === 0;
    bar.classList.toggle("has-selection", n > 0);
  };
  selection.listeners.push(update);
  update();
  return bar;
}

// -- plain files ---------------------------------------------------------------------------

function itemsCard(items, offset, hrefFor) {
  const rows = items.items.map((item) =>
    h(
      "tr",
      { "data-item-id": item.id },
      h(
        "td",
        null,
        h(
          "div",
          { class: "cell-name" },
          h("span", { class: "kind-icon kind-file" }, icon("file")),
          h("a", { href: item.content_url, target: "_blank", rel: "noopener", title: item.key }, item.name),
        ),
      ),
      h("td", { class: "num" }, fmtBytes(item.size)),
      h("td", { class: "hide-sm muted" }, timeEl(item.last_modified)),
    ),
  );
  return card("Files", [
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "table", "data-testid": "items" },
        h("thead", null, h("tr", null, h("th", null, "Name"), h("th", { class: "num" }, "Size"), h("th", { class: "hide-sm" }, "Modified"))),
        h("tbody", null, rows),
      ),
    ),
    pagination({ total: items.total, offset, limit: PAGE, noun: "files", hrefFor: (o) => hrefFor({ ipage: o / PAGE + 1 }) }),
  ]);
}

function capitalize(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
