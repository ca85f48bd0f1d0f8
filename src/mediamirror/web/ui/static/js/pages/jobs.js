// Jobs: live progress, a state filter, logs, retry and cancel; admins select failed jobs
// and retry them in one request (POST /api/v1/bulk/retry).

import { actionButton, card, emptyState, pageHeader, pagination, pill, progressBar } from "../components.js";
import { fmtNumber, fmtRelative, fmtSeconds, h, icon, timeEl } from "../dom.js";

const PAGE = 50;
const ACTIVE = new Set(["queued", "running"]);
const FAILED = new Set(["error", "canceled"]);
const FILTERS = [
  ["", "All"],
  ["queued", "Queued"],
  ["running", "Running"],
  ["error", "Failed"],
  ["success", "Succeeded"],
  ["canceled", "Canceled"],
];

export async function render(page, ctx) {
  ctx.setTitle("Jobs");
  const stateFilter = FILTERS.some(([v]) => v === ctx.query.get("state")) ? ctx.query.get("state") : "";
  const pageNo = Math.max(1, Number.parseInt(ctx.query.get("page") || "1", 10) || 1);
  const offset = (pageNo - 1) * PAGE;
  const hrefFor = (changes) => {
    const q = new URLSearchParams(ctx.query);
    for (const [k, v] of Object.entries(changes)) {
      if (!v) q.delete(k);
      else q.set(k, String(v));
    }
    const search = q.toString();
    return `/ui/jobs${search ? `?${search}` : ""}`;
  };

  const tabs = h("nav", { class: "tabs", "aria-label": "Filter by state" });
  const summary = h("p", { class: "live-note" });
  const body = h("div");
  const pager = h("div");
  let table = null;
  const selection = ctx.isAdmin ? new Set() : null;
  const bar = selection ? bulkBar(ctx, selection, () => table?.syncSelection(), () => poller.kick()) : null;

  page.replaceChildren(
    pageHeader({
      title: "Jobs",
      subtitle: "Post-processing work on your datasets. Progress updates live while jobs are queued or running.",
    }),
    tabs,
    card(null, [bar?.el, body, pager], { className: "card-flush" }),
  );

  const load = async () => {
    const query = `jobs?limit=${PAGE}&offset=${offset}${stateFilter ? `&state=${stateFilter}` : ""}`;
    const data = await ctx.api(query);
    const counts = data.counts || {};
    const active = (counts.queued || 0) + (counts.running || 0);
    drawTabs(tabs, counts, stateFilter, hrefFor);
    summary.replaceChildren(
      ...(active
        ? [h("span", { class: "live-dot" }), `${fmtNumber(active)} active — refreshing every second`]
        : ["No jobs are queued or running"]),
    );
    const total = stateFilter ? counts[stateFilter] || 0 : Object.values(counts).reduce((a, b) => a + b, 0);
    if (!data.jobs.length) {
      table = null;
      selection?.clear();
      body.replaceChildren(emptyJobs(stateFilter));
    } else if (table) {
      table.update(data.jobs);
    } else {
      table = jobsTable(ctx, data.jobs, { onChange: () => poller.kick(), selection, onSelect: () => bar?.draw() });
      body.replaceChildren(summary, table.el);
    }
    bar?.draw();
    pager.replaceChildren(
      ...[pagination({ total, offset, limit: PAGE, noun: "jobs", hrefFor: (o) => hrefFor({ page: o / PAGE + 1 }) })].filter(Boolean),
    );
    return active ? 1000 : 5000;
  };
  const poller = ctx.loop(load);
  const first = await load();
  setTimeout(() => poller.kick(), first);
}

function drawTabs(tabs, counts, current, hrefFor) {
  const all = Object.values(counts).reduce((a, b) => a + b, 0);
  tabs.replaceChildren(
    ...FILTERS.map(([value, label]) =>
      h(
        "a",
        {
          class: ["tab", value === current && "is-active", value && `tab-${value}`],
          href: hrefFor({ state: value, page: null }),
          "aria-current": value === current ? "page" : null,
          "data-state": value || "all",
        },
        label,
        h("span", { class: "tab-count" }, fmtNumber(value ? counts[value] || 0 : all)),
      ),
    ),
  );
}

function emptyJobs(stateFilter) {
  if (stateFilter) {
    const label = FILTERS.find(([v]) => v === stateFilter)[1].toLowerCase();
    return emptyState({ iconName: "check", title: `No ${label} jobs`, body: h("p", null, "Nothing matches this filter right now."), actions: h("a", { class: "btn", href: "/ui/jobs" }, "Show all jobs") });
  }
  return emptyState({
    iconName: "activity",
    title: "No jobs yet",
    body: h("p", null, "Jobs appear here when datasets are post-processed: after a sync, or with Post-process on a folder or dataset."),
    actions: h("a", { class: "btn", href: "/ui/browse" }, icon("folder"), "Browse datasets"),
  });
}

/** The bar above the table: how many failed jobs are selected, and "Retry selected". */
function bulkBar(ctx, selection, redrawBoxes, refresh) {
  const count = h("span", { class: "bulk-count", "aria-live": "polite" });
  const retry = actionButton(ctx, {
    label: "Retry selected",
    iconName: "retry",
    variant: "btn-primary btn-sm",
    attrs: { "data-action": "retry-selected" },
    onClick: async () => {
      const ids = [...selection];
      const answer = await ctx.api("bulk/retry", { method: "POST", body: { job_ids: ids } });
      selection.clear();
      redrawBoxes();
      draw();
      ctx.toast(answer.message.charAt(0).toUpperCase() + answer.message.slice(1));
      refresh();
    },
  });
  const clearButton = h("button", { type: "button", class: "btn btn-ghost btn-sm", "data-action": "clear-selection" }, "Clear selection");
  clearButton.addEventListener("click", () => {
    selection.clear();
    redrawBoxes();
    draw();
  });
  const el = h("div", { class: "bulk-bar", role: "region", "aria-label": "Selected jobs", hidden: true }, count, retry, clearButton);
  const draw = () => {
    el.hidden = selection.size === 0;
    count.textContent = `${fmtNumber(selection.size)} failed job${selection.size === 1 ? "" : "s"} selected`;
  };
  return { el, draw };
}

/**
 * A table of jobs that updates in place (keyed by id), so open logs and focused buttons
 * survive the once-a-second refresh. With ``selection`` (a Set of job ids), failed and
 * canceled jobs get a checkbox. Returns {el, update(jobs), syncSelection()}.
 */
export function jobsTable(ctx, jobs, { onChange, compact = false, selection = null, onSelect = null }) {
  const tbody = h("tbody");
  const rows = new Map();
  const headings = compact
    ? [["Job"], ["State"], ["Progress"], ["", "cell-actions"]]
    : [["Job"], ["Dataset"], ["Processor"], ["State"], ["Progress"], ["Tries", "num"], ["Created", "hide-sm"], ["", "cell-actions"]];
  const all = selection
    ? h("input", { type: "checkbox", "aria-label": "Select every failed job on this page", "data-action": "select-all" })
    : null;
  const el = h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: ["table", "jobs-table", compact && "is-compact"], "data-testid": "jobs" },
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          all ? h("th", { class: "select-cell" }, all) : null,
          headings.map(([label, cls]) => h("th", { class: cls }, label || h("span", { class: "sr-only" }, "Actions"))),
        ),
      ),
      tbody,
    ),
  );
  const selectable = () => [...rows.values()].filter((e) => e.failed());
  const syncSelection = () => {
    if (!selection) return;
    const visible = new Set();
    for (const entry of rows.values()) {
      entry.syncBox();
      if (entry.failed()) visible.add(entry.id());
    }
    for (const id of [...selection]) if (!visible.has(id)) selection.delete(id);
    const boxes = selectable();
    all.checked = boxes.length > 0 && boxes.every((e) => selection.has(e.id()));
    all.indeterminate = !all.checked && boxes.some((e) => selection.has(e.id()));
    all.disabled = boxes.length === 0;
  };
  all?.addEventListener("change", () => {
    for (const entry of selectable()) {
      if (all.checked) selection.add(entry.id());
      else selection.delete(entry.id());
    }
    syncSelection();
    onSelect?.();
  });
  const picked = () => {
    syncSelection();
    onSelect?.();
  };

  const update = (list) => {
    const keep = new Set(list.map((j) => j.id));
    for (const [id, entry] of rows) {
      if (!keep.has(id)) {
        entry.row.remove();
        entry.detail.remove();
        rows.delete(id);
      }
    }
    for (const job of list) {
      let entry = rows.get(job.id);
      if (!entry) {
        entry = makeEntry(ctx, job, { compact, onChange, selection, onPick: picked });
        rows.set(job.id, entry);
      } else {
        entry.set(job);
      }
      tbody.append(entry.row, entry.detail); // append moves rows into the new order
    }
    syncSelection();
  };
  update(jobs);
  return { el, update, syncSelection };
}

function makeEntry(ctx, job, { compact, onChange, selection = null, onPick = null }) {
  const row = h("tr", { class: "job-row" });
  const detail = h("tr", { class: "job-detail", hidden: true });
  const detailCell = h("td", { colspan: (compact ? 4 : 8) + (selection ? 1 : 0) });
  const box = selection ? h("input", { type: "checkbox", "data-action": "select" }) : null;
  const selectCell = selection ? h("td", { class: "select-cell" }, box) : null;
  box?.addEventListener("change", () => {
    if (box.checked) selection.add(current.id);
    else selection.delete(current.id);
    onPick?.();
  });
  detail.append(detailCell);
  const errorEl = h("div", { class: "job-error" });
  const logEl = h("pre", { class: "log", tabindex: "0", "aria-label": "Job log" });
  const logBox = h("div", { class: "log-box", hidden: true }, h("div", { class: "log-head" }, icon("terminal", "icon icon-sm"), "Log"), logEl);
  detailCell.append(errorEl, logBox);

  let current = null;
  let signature = "";
  let logOpen = false;
  let actionsState = "";
  const actionsCell = h("td", { class: "cell-actions" });

  const loadLog = async () => {
    try {
      const data = await ctx.api(`jobs/${current.id}/log`);
      const atBottom = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 8;
      logEl.textContent = data.log || "(the log is empty)";
      if (atBottom) logEl.scrollTop = logEl.scrollHeight;
    } catch (err) {
      logEl.textContent = `The log could not be loaded: ${err.message}`;
    }
  };

  const logButton = h("button", { type: "button", class: "btn btn-ghost btn-sm", "aria-expanded": "false", "data-action": "log" }, icon("terminal"), h("span", null, "Log"));
  logButton.addEventListener("click", async () => {
    logOpen = !logOpen;
    logButton.setAttribute("aria-expanded", String(logOpen));
    logBox.hidden = !logOpen;
    showDetail();
    if (logOpen) await loadLog();
  });

  const showDetail = () => {
    detail.hidden = !(logOpen || (current.error && current.state !== "success"));
  };

  const drawActions = () => {
    const buttons = [logButton];
    if (FAILED.has(current.state)) {
      buttons.push(
        actionButton(ctx, {
          label: "Retry",
          iconName: "retry",
          variant: "btn-sm",
          attrs: { "data-action": "retry" },
          onClick: async () => {
            await ctx.api(`jobs/${current.id}/retry`, { method: "POST" });
            ctx.toast(`Job #${current.id} is queued again`);
            onChange?.();
          },
        }),
      );
    } else if (ACTIVE.has(current.state)) {
      buttons.push(
        actionButton(ctx, {
          label: "Cancel",
          iconName: "cancel",
          variant: "btn-sm btn-danger-ghost",
          attrs: { "data-action": "cancel" },
          onClick: async () => {
            const result = await ctx.api(`jobs/${current.id}/cancel`, { method: "POST" });
            ctx.toast(result.outcome === "canceled" ? `Job #${current.id} canceled` : `Job #${current.id}: ${result.outcome}`);
            onChange?.();
          },
        }),
      );
    }
    actionsCell.replaceChildren(h("div", { class: "row-actions" }, buttons));
  };

  const set = (next) => {
    const previous = current;
    current = next;
    row.dataset.jobId = String(next.id);
    row.dataset.state = next.state;
    const sig = JSON.stringify([next.state, next.progress, next.message, next.error, next.attempts, next.finished_at, next.started_at]);
    if (sig !== signature) {
      signature = sig;
      row.replaceChildren(...(selectCell ? [selectCell] : []), ...cells(next, compact), actionsCell);
      errorEl.replaceChildren(...(next.error && next.state !== "success" ? [icon("alert", "icon icon-sm"), h("span", null, next.error)] : []));
      errorEl.hidden = !(next.error && next.state !== "success");
      showDetail();
    }
    const kind = ACTIVE.has(next.state) ? "active" : FAILED.has(next.state) ? "failed" : "done";
    if (actionsState !== kind) {
      actionsState = kind;
      drawActions();
    }
    const changed = previous && (previous.state !== next.state || previous.progress !== next.progress);
    if (logOpen && (ACTIVE.has(next.state) || changed)) loadLog();
  };

  const failed = () => FAILED.has(current.state);
  const syncBox = () => {
    if (!box) return;
    box.hidden = !failed();
    box.disabled = !failed();
    box.checked = failed() && selection.has(current.id);
    box.setAttribute("aria-label", `Select job #${current.id} (${current.processor}${current.target_path ? `, ${current.target_path}` : ""})`);
  };

  set(job);
  return { row, detail, set, failed, syncBox, id: () => current.id };
}

function cells(job, compact) {
  const progress = job.state === "success" ? 100 : job.progress || 0;
  const out = [];
  if (compact) {
    out.push(h("td", null, h("span", { class: "job-id" }, `#${job.id}`), " ", h("span", { class: "mono" }, job.processor)));
  } else {
    const name = job.target_path ? job.target_path.split("/").filter(Boolean).pop() : `${job.target_type} ${job.target_id}`;
    out.push(
      h("td", null, h("span", { class: "job-id" }, `#${job.id}`)),
      h(
        "td",
        { class: "cell-target" },
        job.dataset_id ? h("a", { href: `/ui/datasets/${job.dataset_id}`, title: job.target_path }, name) : h("span", { title: job.target_path || "" }, name),
      ),
      h("td", null, h("span", { class: "mono" }, job.processor)),
    );
  }
  const note =
    job.state === "running" && job.message
      ? job.message
      : compact && job.finished_at
        ? `finished ${fmtRelative(job.finished_at)}`
        : null;
  out.push(
    h("td", null, pill(job.state)),
    h(
      "td",
      { class: "cell-progress" },
      h(
        "div",
        { class: "progress-cell" },
        progressBar(progress, job.state, `Progress of job #${job.id}`),
        h("span", { class: "progress-pct" }, `${Math.round(progress)}%`),
      ),
      note ? h("div", { class: "progress-msg", title: note }, note) : null,
    ),
  );
  if (!compact) {
    out.push(
      h("td", { class: "num" }, job.max_attempts ? `${job.attempts}/${job.max_attempts}` : String(job.attempts)),
      h("td", { class: "hide-sm muted" }, timeEl(job.created_at), h("div", { class: "small" }, !job.started_at ? "waiting" : job.finished_at ? `took ${duration(job)}` : `running ${duration(job)}`)),
    );
  }
  return out;
}

function duration(job) {
  if (!job.started_at) return "—";
  const end = job.finished_at ? new Date(job.finished_at) : new Date();
  return fmtSeconds((end - new Date(job.started_at)) / 1000);
}
