// A dataset: its player or viewer, details, metadata, files and job history.

import { actionButton, card, emptyState, pageHeader, pill, typeBadge } from "../components.js";
import { fmtBytes, fmtNumber, fmtSeconds, h, icon, timeEl } from "../dom.js";
import { jobsTable } from "./jobs.js";
import { mountDeepZoom } from "../viewers/deepzoom.js";
import { mountFrames } from "../viewers/frames.js";
import { mountVideo } from "../viewers/video.js";

const ACTIVE = new Set(["queued", "running"]);
const FAILED = new Set(["error", "canceled"]);

export async function render(page, ctx) {
  const id = ctx.params.id;
  let ds = await ctx.api(`datasets/${id}`);
  ctx.setTitle(ds.name);

  const slots = {
    header: h("div"),
    viewer: h("div", { class: "viewer-slot" }),
    jobs: h("div"),
    files: h("div"),
    details: h("div"),
    meta: h("div"),
  };
  page.replaceChildren(
    slots.header,
    h(
      "div",
      { class: "dataset-grid" },
      h("div", { class: "dataset-main" }, card(null, slots.viewer, { className: "card-viewer" }), slots.jobs, slots.files),
      h("aside", { class: "dataset-side" }, slots.details, slots.meta),
    ),
  );

  let viewer = null;
  let mediaKey = null;
  const mountViewer = async () => {
    const active = ds.jobs.some((j) => ACTIVE.has(j.state));
    const key = JSON.stringify([ds.media || {}, ds.media && Object.keys(ds.media).length ? null : [ds.status, active]]);
    if (key === mediaKey) return;
    mediaKey = key;
    viewer?.destroy();
    viewer = null;
    slots.viewer.replaceChildren();
    try {
      viewer = await mountMedia(slots.viewer, ds, ctx);
    } catch (err) {
      if (ctx.signal.aborted) return;
      slots.viewer.replaceChildren(placeholder("alert", "The viewer could not start", err.message));
    }
  };
  ctx.signal.addEventListener("abort", () => viewer?.destroy());

  let drawn = "";
  let jobsView = null;
  const draw = () => {
    // Redraw only what changed, so a poll never swaps a button from under the pointer.
    const signature = JSON.stringify([ds.status, ds.state, ds.updated_at, ds.meta, ds.items.length, ds.jobs.map((j) => [j.id, j.state])]);
    if (signature !== drawn) {
      drawn = signature;
      slots.header.replaceChildren(header(ctx, ds, refresh));
      slots.files.replaceChildren(filesCard(ds));
      slots.details.replaceChildren(detailsCard(ds));
      slots.meta.replaceChildren(metadataCard(ds.meta));
    }
    if (jobsView && ds.jobs.length) {
      jobsView.update(ds.jobs);
    } else {
      jobsView = ds.jobs.length ? jobsTable(ctx, ds.jobs, { onChange: refresh, compact: true }) : null;
      slots.jobs.replaceChildren(jobsCard(jobsView));
    }
  };

  const poller = ctx.loop(async () => {
    ds = await ctx.api(`datasets/${id}`);
    draw();
    await mountViewer();
    return ds.jobs.some((j) => ACTIVE.has(j.state)) ? 1500 : null;
  });
  function refresh() {
    poller.kick();
  }

  draw();
  await mountViewer();
  if (ds.jobs.some((j) => ACTIVE.has(j.state))) setTimeout(refresh, 1500);
}

function header(ctx, ds, refresh) {
  const crumbs = [
    { label: "Catalog", href: "/ui/browse" },
    ...ds.breadcrumbs.map((b, i, all) => ({
      label: b.name,
      href: i === all.length - 1 ? null : b.id ? `/ui/browse/${b.id}` : null,
    })),
  ];
  const retryable = latestFailed(ds.jobs);
  const actions = [
    retryable.length
      ? actionButton(ctx, {
          label: `Retry failed (${retryable.length})`,
          iconName: "retry",
          attrs: { "data-action": "retry-failed" },
          onClick: async () => {
            for (const job of retryable) {
              await ctx.api(`jobs/${job.id}/retry`, { method: "POST" });
            }
            ctx.toast(`Queued ${retryable.length} job${retryable.length === 1 ? "" : "s"} again`);
            refresh();
          },
        })
      : null,
    actionButton(ctx, {
      label: "Re-process",
      iconName: "refresh",
      attrs: { "data-action": "reprocess", title: ctx.isAdmin ? "Run this dataset's processors again" : null },
      onClick: async () => {
        const result = await ctx.api(`folders/${ds.id}/reprocess`, { method: "POST", body: {} });
        ctx.toast(`Queued ${result.queued.length} job${result.queued.length === 1 ? "" : "s"}`);
        refresh();
      },
    }),
    actionButton(ctx, {
      label: "Post-process",
      iconName: "zap",
      variant: "btn-primary",
      attrs: { "data-action": "postprocess" },
      onClick: async () => {
        const result = await ctx.api(`folders/${ds.id}/postprocess`, { method: "POST", body: { recursive: false } });
        if (result.queued.length) ctx.toast(`Queued ${result.queued.length} job${result.queued.length === 1 ? "" : "s"}`);
        else if (ds.meta.MarkForPostProcess !== true) ctx.toast("Nothing to do: this dataset is not marked for post-processing. Use Re-process to run it again.", "info");
        else ctx.toast(result.message, "info");
        refresh();
      },
    }),
  ];
  return pageHeader({
    crumbs,
    title: ds.name,
    badges: [
      typeBadge(ds.type),
      ds.status ? pill(ds.status) : null,
      ds.state === "empty" ? pill("empty", "Empty: no files left in the bucket") : null,
      activity(ds.jobs),
    ],
    subtitle: ds.meta.import_source ? h("code", { class: "path", title: "Imported from" }, ds.meta.import_source) : null,
    actions: actions.filter(Boolean),
  });
}

/** "Processing" or "Queued" while jobs are at work on the dataset. */
function activity(jobs) {
  if (jobs.some((j) => j.state === "running")) return pill("running", "Processing");
  if (jobs.some((j) => j.state === "queued")) return pill("queued", "Job queued");
  return null;
}

/** The newest job of each processor, where that one failed or was canceled. */
function latestFailed(jobs) {
  const newest = new Map();
  for (const job of jobs) {
    const seen = newest.get(job.processor);
    if (!seen || job.id > seen.id) newest.set(job.processor, job);
  }
  return [...newest.values()].filter((j) => FAILED.has(j.state));
}

async function mountMedia(slot, ds, ctx) {
  const media = ds.media || {};
  if (media.video) return mountVideo(slot, { src: media.video, poster: media.poster });
  if (media.iiif) return mountDeepZoom(slot, media.iiif, { signal: ctx.signal });
  if (media.frames) return mountFrames(slot, media.frames, { signal: ctx.signal, fallbackFps: ds.meta.fps });
  const active = ds.jobs.some((j) => ACTIVE.has(j.state));
  const failed = ds.status === "error" && !active;
  const what = { video: "video", "large-image": "deep-zoom view", "image-sequence": "frame viewer" }[ds.type] || "viewer";
  slot.append(
    placeholder(
      failed ? "alert" : active ? "clock" : DATASET_ICON[ds.type] || "file",
      failed ? "Processing failed" : active ? "Processing…" : `No ${what} yet`,
      failed
        ? "See the job history below for the reason, fix the file in the bucket or retry the job."
        : active
          ? "A job is at work on this dataset. This page updates when it is done."
          : "Post-process the dataset to make it viewable in the browser.",
      media.poster,
    ),
  );
  return null;
}

const DATASET_ICON = { video: "video", "image-sequence": "frames", "large-image": "image" };

function placeholder(iconName, title, text, poster) {
  return h(
    "div",
    { class: "viewer-placeholder" },
    poster ? h("img", { class: "viewer-poster", src: poster, alt: "" }) : null,
    h("div", { class: "viewer-placeholder-body" }, icon(iconName, "icon icon-lg"), h("p", { class: "viewer-placeholder-title" }, title), h("p", null, text)),
  );
}

function detailsCard(ds) {
  const m = ds.meta || {};
  const probe = m.probe || {};
  const rows = [];
  const add = (label, value) => {
    if (value !== undefined && value !== null && value !== "") rows.push([label, value]);
  };
  const width = m.width ?? probe.width;
  const height = m.height ?? probe.height;
  add("Status", ds.status ? pill(ds.status) : null);
  add("Size", width && height ? `${fmtNumber(width)} × ${fmtNumber(height)} px` : null);
  if (ds.type === "video") {
    add("Frame rate", m.fps > 0 ? `${fmtNumber(m.fps)} fps` + (m.originalFps && m.originalFps !== m.fps ? ` (original ${fmtNumber(m.originalFps)})` : "") : "native, set by post-processing");
    add("Codec", m.codec || probe.codec);
    add("Duration", probe.duration ? fmtSeconds(probe.duration) : null);
    add("Audio", probe.has_audio === undefined ? null : probe.has_audio ? probe.audio_codec || "yes" : "none");
    add("Playback", m.media ? (m.media.transcoded ? "transcoded to H.264 MP4" : "original file") : null);
  }
  if (ds.type === "image-sequence") {
    add("Frames", m.frames !== undefined ? fmtNumber(m.frames) : fmtNumber(ds.items.length));
    add("Frame rate", m.fps > 0 ? `${fmtNumber(m.fps)} fps` : null);
  }
  add("Files", fmtNumber(ds.items.length));
  add("Updated", timeEl(ds.updated_at));
  return card(
    "Details",
    h(
      "dl",
      { class: "facts" },
      rows.map(([label, value]) => [h("dt", null, label), h("dd", null, value)]),
    ),
  );
}

const META_ORDER = ["type", "fps", "originalFps", "codec", "annotate", "MarkForPostProcess", "frames", "width", "height", "import_path", "import_source"];

function metadataCard(meta) {
  const keys = Object.keys(meta || {}).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const scalars = keys.filter((k) => !isObject(meta[k]));
  const nested = keys.filter((k) => isObject(meta[k]));
  return card("Metadata", [
    kvTable(Object.fromEntries(scalars.map((k) => [k, meta[k]]))),
    nested.map((k) =>
      h(
        "details",
        { class: "meta-group", open: k === "processing" ? true : null, "data-key": k },
        h("summary", null, h("span", { class: "mono" }, k), h("span", { class: "meta-count" }, `${Object.keys(meta[k]).length}`)),
        kvTable(meta[k]),
      ),
    ),
  ]);
}

function rank(key) {
  const i = META_ORDER.indexOf(key);
  return i === -1 ? META_ORDER.length : i;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function kvTable(obj, depth = 0) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h("p", { class: "muted small kv-empty" }, "(none)");
  return h(
    "table",
    { class: ["kv", depth && "kv-sub"] },
    h(
      "tbody",
      null,
      entries.map(([k, v]) =>
        isObject(v) && depth < 3
          ? h("tr", { class: "kv-nested" }, h("td", { colspan: 2 }, h("div", { class: "kv-sub-key" }, k), kvTable(v, depth + 1)))
          : h("tr", null, h("th", { scope: "row" }, k), h("td", null, valueEl(v))),
      ),
    ),
  );
}

function valueEl(value) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "null");
  if (typeof value === "boolean") return h("span", { class: ["bool", value ? "bool-true" : "bool-false"] }, String(value));
  if (typeof value === "number") return h("span", { class: "num" }, fmtNumber(value));
  if (isObject(value)) return h("code", { class: "json" }, JSON.stringify(value));
  if (Array.isArray(value)) return h("code", { class: "json" }, JSON.stringify(value));
  return h("span", { class: "value-text" }, String(value));
}

function jobsCard(view) {
  if (!view) {
    return card("Job history", h("p", { class: "card-empty" }, "No jobs have run on this dataset yet."));
  }
  return card("Job history", view.el, {
    actions: h("a", { class: "btn btn-ghost btn-sm", href: "/ui/jobs" }, "All jobs", icon("next")),
  });
}

const FILES_SHOWN = 12;

function filesCard(ds) {
  if (!ds.items.length) {
    return card("Files", emptyState({ iconName: "file", title: "No files", body: h("p", null, "All files of this dataset are gone from the bucket.") }));
  }
  const row = (item) =>
    h(
      "tr",
      { "data-item-id": item.id },
      h("td", null, h("div", { class: "cell-name" }, h("span", { class: "kind-icon kind-file" }, icon("file")), h("a", { href: item.content_url, target: "_blank", rel: "noopener", title: item.key }, item.name))),
      h("td", { class: "num" }, fmtBytes(item.size)),
      h("td", { class: "hide-sm muted" }, timeEl(item.last_modified)),
    );
  const tbody = h("tbody", null, ds.items.slice(0, FILES_SHOWN).map(row));
  const rest = ds.items.length - FILES_SHOWN;
  const more =
    rest > 0
      ? h("div", { class: "card-foot" }, h("button", { type: "button", class: "btn btn-ghost btn-sm", onClick: (e) => {
          tbody.append(...ds.items.slice(FILES_SHOWN).map(row));
          e.currentTarget.parentElement.remove();
        } }, `Show ${fmtNumber(rest)} more`))
      : null;
  const total = ds.items.reduce((sum, item) => sum + (item.size || 0), 0);
  return card(
    `Files (${fmtNumber(ds.items.length)})`,
    [
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "table", "data-testid": "files" },
          h("thead", null, h("tr", null, h("th", null, "Name"), h("th", { class: "num" }, "Size"), h("th", { class: "hide-sm" }, "Modified"))),
          tbody,
        ),
      ),
      more,
    ],
    { actions: h("span", { class: "muted small" }, `${fmtBytes(total)} in all`) },
  );
}
