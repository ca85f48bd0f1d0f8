// Sources: what is mirrored from where, the last sync's figures, and "Sync now".

import { actionButton, card, emptyState, pageHeader, pill, runsTable } from "../components.js";
import { fmtDate, fmtNumber, fmtSeconds, h, icon, timeEl } from "../dom.js";

export async function render(page, ctx) {
  ctx.setTitle("Sources");
  const list = h("div", { class: "source-list" });
  const add = ctx.isAdmin
    ? [h("a", { class: "btn btn-primary", href: "/ui/sources/new", "data-action": "add-source" }, icon("database"), h("span", { class: "btn-label" }, "Add source"))]
    : [];
  page.replaceChildren(
    pageHeader({
      title: "Sources",
      subtitle: "Buckets and folders mirrored read-only into the catalog. Nothing is ever written to a source.",
      actions: add,
    }),
    list,
  );

  // After "Sync now", keep refreshing until a new run shows up (a small source may be
  // synced before the first refresh ever sees it running).
  const waiting = new Map(); // name -> {runId, until}
  const views = new Map();

  const load = async () => {
    const sources = await ctx.api("sources");
    if (!sources.length) {
      views.clear();
      list.replaceChildren(noSources(ctx));
      return null;
    }
    if (!views.size) list.replaceChildren();
    const now = Date.now();
    for (const src of sources) {
      const wait = waiting.get(src.name);
      const runId = src.last_run ? src.last_run.id : null;
      if (wait && ((runId !== wait.runId && !src.syncing) || now > wait.until)) {
        waiting.delete(src.name);
        if (runId !== wait.runId && src.last_run) {
          const run = src.last_run;
          if (run.state === "success") ctx.toast(`${src.name}: synced — ${fmtNumber(run.added)} added, ${fmtNumber(run.changed)} changed, ${fmtNumber(run.deleted)} deleted`);
          else ctx.banner.error(`Sync of ${src.name} ended ${run.state}${run.error ? `: ${run.error}` : ""}`);
        }
      }
      let view = views.get(src.name);
      if (!view) {
        view = sourceCard(ctx, src, async () => {
          const before = src.last_run ? src.last_run.id : null;
          await ctx.api(`sources/${encodeURIComponent(src.name)}/sync`, { method: "POST" });
          waiting.set(src.name, { runId: before, until: Date.now() + 5 * 60 * 1000 });
          ctx.toast(`Sync of ${src.name} started`);
          poller.kick();
        });
        views.set(src.name, view);
        list.append(view.el);
      }
      view.set(src, waiting.has(src.name));
    }
    for (const [name, view] of views) {
      if (!sources.some((s) => s.name === name)) {
        view.el.remove();
        views.delete(name);
      }
    }
    const busy = sources.some((s) => s.syncing) || waiting.size > 0;
    return busy ? 1000 : 15000;
  };
  const poller = ctx.loop(load);
  const delay = await load();
  if (delay) setTimeout(() => poller.kick(), delay);
}

function noSources(ctx) {
  return emptyState({
    iconName: "database",
    title: "No sources yet",
    body: [
      h("p", null, "A source is a bucket (S3, MinIO, DigitalOcean Spaces, GCS) or a local folder, mirrored into the catalog."),
      ctx.isAdmin
        ? h("p", null, "Add one here: the form checks the connection before anything is saved.")
        : h("p", null, "An admin adds them here, or on the server:"),
      ctx.isAdmin ? null : h("pre", { class: "code-block" }, "mediamirror source add footage s3://my-bucket/videos\nmediamirror sync footage"),
    ],
    actions: ctx.isAdmin ? h("a", { class: "btn btn-primary", href: "/ui/sources/new" }, icon("database"), "Add source") : null,
  });
}

function sourceCard(ctx, src, syncNow) {
  const status = h("div", { class: "source-status" });
  const details = h("dl", { class: "source-facts" });
  const stats = h("div", { class: "stats" });
  const runLine = h("p", { class: "run-line" });
  const errorLine = h("div", { class: "run-error", hidden: true });
  const mountLink = h("a", { class: "btn btn-sm", "data-action": "browse" }, icon("folder"), "Browse");
  const button = actionButton(ctx, { label: "Sync now", iconName: "refresh", variant: "btn-primary btn-sm", attrs: { "data-action": "sync" }, onClick: syncNow });
  const history = h("details", { class: "runs" }, h("summary", null, "Recent runs"), h("div", { class: "runs-body" }));
  history.addEventListener("toggle", () => {
    if (history.open) loadRuns(ctx, src.name, history.querySelector(".runs-body"));
  });

  const el = card(
    null,
    [
      h(
        "div",
        { class: "source-head" },
        h("div", { class: "source-title" }, h("span", { class: "source-icon" }, icon("database")), h("h2", null, h("a", { class: "source-link", href: `/ui/sources/${encodeURIComponent(src.name)}` }, src.name)), status),
        h("div", { class: "source-actions" }, mountLink, button),
      ),
      details,
      stats,
      runLine,
      errorLine,
      history,
    ],
    { className: "source-card" },
  );
  el.dataset.source = src.name;

  const set = (s, starting) => {
    src = s;
    const run = s.last_run;
    const syncing = s.syncing || starting;
    el.dataset.syncing = String(Boolean(syncing));
    status.replaceChildren(
      syncing
        ? pill("syncing", "Syncing…")
        : run
          ? pill(run.state, run.state === "success" ? "Synced" : capitalize(run.state))
          : pill("new", "Never synced"),
    );
    button.classList.toggle("is-syncing", Boolean(syncing));
    if (syncing) button.setAttribute("disabled", "");
    else button.removeAttribute("disabled");
    if (s.mount_folder_id) {
      mountLink.setAttribute("href", `/ui/browse/${s.mount_folder_id}`);
      mountLink.hidden = false;
    } else {
      mountLink.hidden = true;
    }

    const facts = [
      ["URL", h("code", { class: "path" }, s.url)],
      ["Mount", s.mount_folder_id ? h("a", { href: `/ui/browse/${s.mount_folder_id}`, class: "path" }, s.mount) : h("code", { class: "path" }, s.mount)],
      s.preset ? ["Preset", s.preset] : null,
      s.endpoint_url ? ["Endpoint", h("code", { class: "path" }, s.endpoint_url)] : null,
      s.region ? ["Region", s.region] : null,
      s.include ? ["Include", h("code", null, s.include)] : null,
      s.exclude ? ["Exclude", h("code", null, s.exclude)] : null,
    ].filter(Boolean);
    details.replaceChildren(...facts.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)]));

    if (run) {
      stats.hidden = false;
      stats.replaceChildren(
        stat("Added", run.added, "added"),
        stat("Changed", run.changed, "changed"),
        stat("Deleted", run.deleted, "deleted"),
        stat("Unchanged", run.unchanged, "unchanged"),
        stat("Listed", run.listed, "listed"),
        stat("Took", run.seconds === null ? "—" : fmtSeconds(run.seconds), "seconds"),
      );
      const when = run.finished_at || run.started_at;
      runLine.replaceChildren(
        icon("clock", "icon icon-sm"),
        run.state === "running" ? "Started " : "Last run ",
        timeEl(when),
        h("span", { class: "muted" }, ` · ${fmtDate(when)}`),
      );
    } else {
      stats.hidden = true;
      runLine.replaceChildren(icon("clock", "icon icon-sm"), "Not synced yet. Press Sync now to mirror it for the first time.");
    }
    errorLine.hidden = !(run && run.error);
    errorLine.replaceChildren(...(run && run.error ? [icon("alert", "icon icon-sm"), h("span", null, run.error)] : []));
    if (history.open) loadRuns(ctx, s.name, history.querySelector(".runs-body"));
  };

  return { el, set };
}

function stat(label, value, key) {
  return h(
    "div",
    { class: "stat", "data-stat": key },
    h("div", { class: "stat-value" }, typeof value === "number" ? fmtNumber(value) : value),
    h("div", { class: "stat-label" }, label),
  );
}

async function loadRuns(ctx, name, box) {
  try {
    const runs = await ctx.api(`sources/${encodeURIComponent(name)}/runs?limit=10`);
    if (!runs.length) {
      box.replaceChildren(h("p", { class: "muted small" }, "No runs yet."));
      return;
    }
    box.replaceChildren(runsTable(runs));
  } catch (err) {
    box.replaceChildren(h("p", { class: "muted small" }, `Runs could not be loaded: ${err.message}`));
  }
}

function capitalize(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : "";
}
