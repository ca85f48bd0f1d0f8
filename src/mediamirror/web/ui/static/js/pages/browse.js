// The folder browser: breadcrumbs, sub-folders and datasets (sorted, 50 a page), files.

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

function foldersCard(ctx, folder, children, sort, offset, hrefFor, mounts) {
  const sorter = select({
    label: "Sort",
    id: "sort",
    value: sort,
    options: SORTS,
    onChange: (value) => ctx.navigate(hrefFor({ sort: value === "name" ? null : value, page: null })),
  });
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
  const rows = children.folders.map((f) => folderRow(ctx, f, mounts.get(f.path)));
  const table = h(
    "table",
    { class: "table table-hover", "data-testid": "folders" },
    h(
      "thead",
      null,
      h("tr", null, h("th", null, "Name"), h("th", { class: "hide-xs" }, "Kind"), h("th", null, "Status"), h("th", { class: "hide-sm" }, "Updated")),
    ),
    h("tbody", null, rows),
  );
  const datasets = children.folders.filter((f) => f.type).length;
  return card(
    folder ? "Folders and datasets" : "Top-level folders",
    [
      h("div", { class: "table-wrap" }, table),
      pagination({
        total: children.total,
        offset,
        limit: PAGE,
        noun: datasets === children.folders.length ? "datasets" : "folders",
        hrefFor: (o) => hrefFor({ page: o / PAGE + 1 }),
      }),
    ],
    { actions: sorter },
  );
}

function folderRow(ctx, f, source) {
  const href = f.type ? `/ui/datasets/${f.id}` : `/ui/browse/${f.id}`;
  const kind = DATASET_TYPES[f.type];
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
        h("span", { class: ["kind-icon", f.type ? `kind-${f.type}` : "kind-folder"] }, icon(kind ? kind.icon : "folder")),
        link,
      ),
    ),
    h(
      "td",
      { class: "hide-xs" },
      f.type
        ? typeBadge(f.type)
        : source
          ? h("span", { class: "badge badge-source", title: `Mount of source ${source}` }, icon("database", "icon icon-sm"), "Source")
          : h("span", { class: "muted" }, "Folder"),
    ),
    h(
      "td",
      null,
      h(
        "span",
        { class: "pill-row" },
        f.status ? pill(f.status) : null,
        f.state === "empty" ? pill("empty", "Empty") : null,
        !f.status && f.state !== "empty" ? h("span", { class: "muted" }, "—") : null,
      ),
    ),
    h("td", { class: "hide-sm muted" }, timeEl(f.updated_at)),
  );
  row.addEventListener("click", (event) => {
    if (event.target.closest("a, button")) return;
    ctx.navigate(href);
  });
  return row;
}

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
