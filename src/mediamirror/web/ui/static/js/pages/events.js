// Bucket notifications received by the push endpoints, with what became of each.

import { card, emptyState, pageHeader, pagination, pill, select } from "../components.js";
import { h, icon, timeEl } from "../dom.js";

const PAGE = 50;
const OUTCOMES = [
  ["", "All outcomes"],
  ["applied", "Applied"],
  ["duplicate", "Duplicate"],
  ["stale", "Stale"],
  ["ignored", "Ignored"],
  ["test", "Test"],
  ["confirmed", "Confirmed"],
  ["rejected", "Rejected"],
  ["error", "Error"],
];

export async function render(page, ctx) {
  ctx.setTitle("Events");
  const outcome = ctx.query.get("outcome") || "";
  const source = ctx.query.get("source") || "";
  const pageNo = Math.max(1, Number.parseInt(ctx.query.get("page") || "1", 10) || 1);
  const offset = (pageNo - 1) * PAGE;
  const hrefFor = (changes) => {
    const q = new URLSearchParams(ctx.query);
    for (const [k, v] of Object.entries(changes)) {
      if (!v) q.delete(k);
      else q.set(k, String(v));
    }
    const search = q.toString();
    return `/ui/events${search ? `?${search}` : ""}`;
  };
  const withCurrent = (options, value) => (options.some(([v]) => v === value) ? options : [...options, [value, value]]);
  const sources = await ctx.api("sources").catch(() => []);
  const filters = h(
    "div",
    { class: "filters" },
    sources.length > 1 || source
      ? select({
          label: "Source",
          id: "source",
          value: source,
          options: withCurrent([["", "All sources"], ...sources.map((s) => [s.name, s.name])], source),
          onChange: (value) => ctx.navigate(hrefFor({ source: value, page: null })),
        })
      : null,
    select({
      label: "Outcome",
      id: "outcome",
      value: outcome,
      options: withCurrent(OUTCOMES, outcome),
      onChange: (value) => ctx.navigate(hrefFor({ outcome: value, page: null })),
    }),
  );
  const body = h("div");
  page.replaceChildren(
    pageHeader({
      title: "Events",
      subtitle: "Notifications pushed by your buckets when objects are created or deleted, applied to the catalog like a one-key sync.",
    }),
    body,
  );

  const load = async () => {
    let data;
    try {
      const q = new URLSearchParams({ limit: PAGE, offset });
      if (outcome) q.set("outcome", outcome);
      if (source) q.set("source", source);
      data = await ctx.api(`events?${q}`);
    } catch (err) {
      if (err.status === 404 || err.status === 405) {
        body.replaceChildren(notEnabled());
        return null;
      }
      throw err;
    }
    const events = Array.isArray(data) ? data : data.events || data.items || [];
    const total = Array.isArray(data) ? null : data.total ?? null;
    // Refused pushes are counted per source and reason, not kept one by one.
    const refused = await ctx.api(`events/refusals${source ? `?${new URLSearchParams({ source })}` : ""}`).catch(() => null);
    const refusals = refused && refused.refusals && refused.refusals.length ? refusalsCard(refused.refusals) : null;
    if (!events.length) {
      body.replaceChildren(
        outcome || source
          ? card(null, [h("div", { class: "card-toolbar" }, filters), emptyState({ iconName: "bell", title: "No events match these filters", body: h("p", null, "Try another outcome or source."), actions: h("a", { class: "btn", href: "/ui/events" }, "Show all events") })])
          : noEvents(),
        ...(refusals ? [refusals] : []),
      );
      return 10000;
    }
    body.replaceChildren(
      card(
        "Received notifications",
        [
          h("div", { class: "table-wrap" }, eventsTable(events)),
          total !== null
            ? pagination({ total, offset, limit: PAGE, noun: "events", hrefFor: (o) => hrefFor({ page: o / PAGE + 1 }) })
            : null,
        ],
        { actions: filters, className: "card-flush" },
      ),
      ...(refusals ? [refusals] : []),
    );
    return 5000;
  };
  const poller = ctx.loop(load);
  const delay = await load();
  if (delay) setTimeout(() => poller.kick(), delay);
}

function eventsTable(events) {
  return h(
    "table",
    { class: "table", "data-testid": "events" },
    h(
      "thead",
      null,
      h("tr", null, ["Received", "Source", "Type", "Key", "Outcome"].map((t, i) => h("th", { class: i === 0 ? "nowrap" : null }, t))),
    ),
    h(
      "tbody",
      null,
      events.map((ev) => {
        const source = ev.source ?? ev.source_name ?? (ev.source_id != null ? `source ${ev.source_id}` : null);
        return h(
          "tr",
          { "data-outcome": ev.outcome },
          h("td", { class: "nowrap muted" }, timeEl(ev.received_at ?? ev.time ?? ev.created_at)),
          h("td", null, source ?? h("span", { class: "muted" }, "no source"), ev.channel ? h("div", { class: "muted small" }, ev.channel) : null),
          h("td", null, ev.event_type ?? ev.type ? h("span", { class: "mono small" }, ev.event_type ?? ev.type) : h("span", { class: "muted" }, "—")),
          h(
            "td",
            { class: "cell-key" },
            ev.key ? h("code", { class: "path", title: ev.key }, ev.key) : h("span", { class: "muted" }, "—"),
            ev.bucket ? h("div", { class: "muted small" }, ev.bucket) : null,
          ),
          h("td", null, pill(ev.outcome), ev.detail ? h("div", { class: "muted small event-detail" }, ev.detail) : null),
        );
      }),
    ),
  );
}

function refusalsCard(rows) {
  const table = h(
    "table",
    { class: "table", "data-testid": "refusals" },
    h("thead", null, h("tr", null, ["Last", "Source", "Reason", "Count", "Last message"].map((t, i) => h("th", { class: i === 0 ? "nowrap" : null }, t)))),
    h(
      "tbody",
      null,
      rows.map((r) =>
        h(
          "tr",
          { "data-reason": r.reason },
          h("td", { class: "nowrap muted" }, timeEl(r.last_at)),
          h("td", null, r.source ?? h("span", { class: "muted" }, "no source"), h("div", { class: "muted small" }, r.channel)),
          h("td", null, pill("rejected", r.reason)),
          h("td", { class: "num", "data-testid": "refusal-count" }, String(r.count)),
          h("td", null, r.detail ? h("div", { class: "muted small event-detail" }, r.detail) : null),
        ),
      ),
    ),
  );
  return card("Refused pushes", [h("div", { class: "table-wrap" }, table)], { className: "card-flush" });
}

function setupSteps() {
  return h(
    "ol",
    { class: "steps" },
    h(
      "li",
      null,
      h("strong", null, "Create the source's push token. "),
      "On the server run ",
      h("code", null, "mediamirror source push-token NAME --base-url https://this-server"),
      ". It prints the endpoint URL, token included.",
    ),
    h(
      "li",
      null,
      h("strong", null, "Give that URL to the bucket. "),
      "As an S3 or MinIO webhook, an SNS HTTPS subscription, or a Google Cloud Pub/Sub push subscription, for object-created and object-removed events.",
    ),
    h("li", null, h("strong", null, "Upload a file. "), "Its notification shows up here with its outcome, and the catalog changes without waiting for the next sync."),
  );
}

function notEnabled() {
  return emptyState({
    iconName: "bell",
    title: "Push notifications are not enabled on this server",
    body: [
      h("p", null, "Scheduled and manual syncs keep the catalog up to date. To see new uploads within seconds, let your buckets push their notifications:"),
      setupSteps(),
    ],
    actions: h("a", { class: "btn", href: "/ui/sources" }, icon("database"), "View sources"),
  });
}

function noEvents() {
  return emptyState({
    iconName: "bell",
    title: "No bucket notifications received yet",
    body: [h("p", null, "Set up push notifications so new uploads appear within seconds:"), setupSteps()],
    actions: h("a", { class: "btn", href: "/ui/sources" }, icon("database"), "View sources"),
  });
}
