// Overview, the UI's home: sources and their health, datasets by status, jobs with
// throughput, and the failures inbox (failed jobs grouped by reason, retried a group at a
// time). Two calls per refresh: GET /overview (aggregates) and GET /failures (a page of
// groups). Sections are redrawn only when their data changed, so keyboard focus stays.

import { actionButton, card, emptyState, pageHeader, pagination, pill, typeBadge } from "../components.js";
import { fmtNumber, h, icon, plural, timeEl } from "../dom.js";

const GROUPS_PER_PAGE = 10;
const STATUS_ORDER = ["ready", "pending", "new", "error"];
const JOB_ORDER = ["queued", "running", "success", "error", "canceled"];
const JOB_LABELS = { queued: "Queued", running: "Running", success: "Succeeded", error: "Failed", canceled: "Canceled" };

export async function render(page, ctx) {
  ctx.setTitle("Overview");
  const fpage = Math.max(1, Number.parseInt(ctx.query.get("failures_page") || "1", 10) || 1);
  const offset = (fpage - 1) * GROUPS_PER_PAGE;

  const subtitle = h("p", { class: "page-subtitle overview-summary", "data-testid": "summary" });
  const header = pageHeader({ title: "Overview" });
  header.append(subtitle);
  const tiles = h("div", { class: "overview-tiles" });
  const sourcesBody = h("div");
  const inboxBody = h("div");
  const inboxPager = h("div");
  page.replaceChildren(
    header,
    tiles,
    card("Failures inbox", [inboxBody, inboxPager], { className: "card-flush overview-inbox" }),
    card("Sources", sourcesBody, { className: "card-flush overview-sources" }),
  );

  const drawn = { tiles: "", sources: "", inbox: "" };
  const changed = (key, data) => {
    const sig = JSON.stringify(data);
    if (drawn[key] === sig) return false;
    drawn[key] = sig;
    return true;
  };

  const load = async () => {
    const [data, inbox] = await Promise.all([
      ctx.api("overview"),
      ctx.api(`failures?limit=${GROUPS_PER_PAGE}&offset=${offset}`),
    ]);
    subtitle.textContent = summaryLine(data);
    if (changed("tiles", [data.datasets, data.jobs])) tiles.replaceChildren(...drawTiles(data));
    if (changed("sources", data.sources)) sourcesBody.replaceChildren(drawSources(ctx, data.sources));
    if (changed("inbox", inbox)) {
      inboxBody.replaceChildren(drawInbox(ctx, inbox, () => poller.kick()));
      inboxPager.replaceChildren(
        ...[
          pagination({
            total: inbox.total_groups,
            offset,
            limit: GROUPS_PER_PAGE,
            noun: "groups",
            hrefFor: (o) => (o ? `/ui/overview?failures_page=${o / GROUPS_PER_PAGE + 1}` : "/ui/overview"),
          }),
        ].filter(Boolean),
      );
    }
    const busy = (data.jobs.by_state.queued || 0) + (data.jobs.by_state.running || 0) > 0;
    return busy ? 3000 : 10000;
  };
  const poller = ctx.loop(load);
  const first = await load();
  setTimeout(() => poller.kick(), first);
}

function summaryLine(data) {
  const failed = data.failed_jobs;
  return [
    plural(data.sources.length, "source"),
    plural(data.datasets.total, "dataset"),
    plural(failed, "failed job"),
  ].join(", ") + (failed ? ": the inbox below says why." : ".");
}

function tile({ label, value, href, tone, key, note }) {
  const body = [
    h("span", { class: "tile-value" }, fmtNumber(value)),
    h("span", { class: "tile-label" }, label),
    note ? h("span", { class: "tile-note" }, note) : null,
  ];
  const attrs = { class: ["tile", tone && `tile-${tone}`], "data-stat": key };
  return href ? h("a", { ...attrs, href }, body) : h("div", attrs, body);
}

function drawTiles(data) {
  const ds = data.datasets;
  const jobs = data.jobs;
  const tones = { ready: "ok", pending: "warn", new: "info", error: "err" };
  const labels = { ready: "Ready", pending: "Pending", new: "New", error: "With errors" };
  const types = Object.entries(ds.by_type || {}).sort((a, b) => b[1] - a[1]);
  return [
    h(
      "section",
      { class: "tile-group", "aria-labelledby": "ov-datasets" },
      h("h2", { class: "tile-group-title", id: "ov-datasets" }, "Datasets"),
      h(
        "div",
        { class: "tile-row" },
        tile({ label: "Datasets", value: ds.total, key: "datasets", href: "/ui/browse" }),
        STATUS_ORDER.map((s) => tile({ label: labels[s], value: ds.by_status[s] || 0, tone: ds.by_status[s] ? tones[s] : null, key: `datasets-${s}` })),
      ),
      types.length
        ? h("p", { class: "tile-types" }, types.map(([t, n]) => h("span", { class: "tile-type" }, typeBadge(t), " ", fmtNumber(n))))
        : null,
    ),
    h(
      "section",
      { class: "tile-group", "aria-labelledby": "ov-jobs" },
      h("h2", { class: "tile-group-title", id: "ov-jobs" }, "Jobs"),
      h(
        "div",
        { class: "tile-row" },
        JOB_ORDER.map((s) =>
          tile({
            label: JOB_LABELS[s],
            value: jobs.by_state[s] || 0,
            key: `jobs-${s}`,
            href: `/ui/jobs?state=${s}`,
            tone: s === "error" && jobs.by_state[s] ? "err" : s === "running" && jobs.by_state[s] ? "run" : null,
          }),
        ),
        tile({
          label: "Done, last hour",
          value: jobs.finished_last_hour,
          key: "throughput",
          note: `${fmtNumber(jobs.finished_last_minute)} in the last minute`,
        }),
      ),
    ),
  ];
}

function drawSources(ctx, sources) {
  if (!sources.length) {
    return emptyState({
      iconName: "database",
      title: "No sources yet",
      body: h("p", null, "A source is a bucket or a local folder mirrored into the catalog. Add one to see its health here."),
      actions: ctx.isAdmin ? h("a", { class: "btn btn-primary", href: "/ui/sources/new" }, icon("database"), "Add source") : null,
    });
  }
  const health = { ok: ["success", "Healthy"], error: ["error", "Last sync failed"], syncing: ["syncing", "Syncing…"], "never synced": ["new", "Never synced"] };
  const rows = sources.map((s) => {
    const [state, label] = health[s.health] || ["neutral", s.health];
    const run = s.last_sync;
    const ev = s.events_24h;
    return h(
      "tr",
      { "data-source": s.name },
      h("th", { scope: "row" }, h("a", { href: `/ui/sources/${encodeURIComponent(s.name)}` }, s.name), h("div", { class: "small muted mono ov-url" }, s.url)),
      h("td", null, pill(state, label), run && run.error ? h("div", { class: "small ov-error" }, run.error) : null),
      h(
        "td",
        null,
        run ? timeEl(run.finished_at || run.started_at) : h("span", { class: "muted" }, "—"),
        run ? h("div", { class: "small muted" }, `${fmtNumber(run.added)} added · ${fmtNumber(run.changed)} changed · ${fmtNumber(run.deleted)} deleted`) : null,
      ),
      h("td", null, s.schedule ? h("code", null, s.schedule) : h("span", { class: "muted" }, "manual")),
      h(
        "td",
        null,
        ev.received ? fmtNumber(ev.received) : h("span", { class: "muted" }, "none"),
        ev.problems ? h("div", { class: "small ov-error" }, plural(ev.problems, "refused or failed", "refused or failed")) : null,
        ev.last_at ? h("div", { class: "small muted" }, "last ", timeEl(ev.last_at)) : null,
      ),
      h("td", { class: "cell-actions" }, s.mount_folder_id ? h("a", { class: "btn btn-sm", href: `/ui/browse/${s.mount_folder_id}`, "aria-label": `Browse ${s.name}` }, icon("folder"), "Browse") : null),
    );
  });
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "table ov-sources-table", "data-testid": "sources" },
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          ["Source", "Health", "Last sync", "Schedule", "Push events (24 h)"].map((t) => h("th", { scope: "col" }, t)),
          h("th", { scope: "col", class: "cell-actions" }, h("span", { class: "sr-only" }, "Actions")),
        ),
      ),
      h("tbody", null, rows),
    ),
  );
}

function drawInbox(ctx, inbox, refresh) {
  if (!inbox.groups.length) {
    return emptyState({
      iconName: "check",
      title: inbox.total_groups ? "No more groups" : "No failed jobs",
      body: h("p", null, inbox.total_groups ? "This page is past the last group." : "Every job that ended has succeeded (or was canceled). Failures show up here grouped by reason."),
      actions: inbox.total_groups ? h("a", { class: "btn", href: "/ui/overview" }, "First page") : null,
    });
  }
  return h(
    "ul",
    { class: "ov-groups", "aria-label": `${plural(inbox.total_jobs, "failed job")} in ${plural(inbox.total_groups, "group")}` },
    inbox.groups.map((g) => drawGroup(ctx, g, refresh)),
  );
}

function drawGroup(ctx, g, refresh) {
  const reason = readable(g.key.slice(g.processor.length + 2));
  const titleId = `grp-${hash(g.key)}`;
  const datasets = g.datasets.map((d) =>
    h("li", null, h("a", { href: `/ui/datasets/${d.id}`, title: d.path }, d.path.split("/").filter(Boolean).pop() || d.path)),
  );
  const more = g.more_datasets ? h("li", { class: "muted" }, `and ${fmtNumber(g.targets - g.datasets.length)} more`) : null;
  const actions = [
    h("a", { class: "btn btn-sm", href: `/ui/jobs?state=error`, "aria-label": `Failed jobs (${g.processor})` }, icon("activity"), "Jobs"),
  ];
  if (ctx.isAdmin) {
    actions.push(
      actionButton(ctx, {
        label: "Retry all in this group",
        iconName: "retry",
        variant: "btn-primary btn-sm",
        attrs: { "data-action": "retry-group", "aria-describedby": titleId },
        onClick: async () => {
          const answer = await ctx.api("bulk/retry", { method: "POST", body: { reason: g.key } });
          ctx.toast(capitalize(answer.message));
          refresh();
        },
      }),
    );
  }
  return h(
    "li",
    { class: "ov-group", "data-group": g.key },
    h(
      "div",
      { class: "ov-group-head" },
      h(
        "div",
        { class: "ov-group-title" },
        h("h3", { id: titleId }, h("span", { class: "mono ov-proc" }, g.processor), " ", reason),
        h("p", { class: "small muted" }, pill("error", plural(g.jobs, "failed job")), " last ", timeEl(g.last_failed_at)),
      ),
      h("div", { class: "row-actions" }, actions),
    ),
    h("p", { class: "ov-example" }, h("span", { class: "muted" }, "Example: "), h("span", { class: "mono" }, g.example || "(no message)")),
    datasets.length ? h("ul", { class: "ov-datasets", "aria-label": "Affected datasets" }, datasets, more) : null,
  );
}

/** A group key for people: what varies between its failures (<path>, <n>…) as "…". */
function readable(reason) {
  return reason.replace(/<(path|name|url|id|n)>/g, "…").replace(/^…:\s*/, "");
}

function hash(text) {
  let n = 0;
  for (let i = 0; i < text.length; i += 1) n = (n * 31 + text.charCodeAt(i)) | 0;
  return (n >>> 0).toString(36);
}

function capitalize(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : "";
}
