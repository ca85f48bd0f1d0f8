// Email and webhook notifications: what was sent, to which channel, and a "Send test" button.

import { actionButton, card, emptyState, pageHeader, pagination, pill, select } from "../components.js";
import { h, icon, plural, timeEl } from "../dom.js";

const PAGE = 50;
const KINDS = [
  ["", "All kinds"],
  ["dataset.ready", "Dataset ready"],
  ["job.failed", "Job failed"],
  ["sync.failed", "Sync failed"],
  ["sync.finished", "Sync finished"],
  ["test", "Test"],
];

export async function render(page, ctx) {
  ctx.setTitle("Notifications");
  const kind = ctx.query.get("kind") || "";
  const pageNo = Math.max(1, Number.parseInt(ctx.query.get("page") || "1", 10) || 1);
  const offset = (pageNo - 1) * PAGE;
  const hrefFor = (changes) => {
    const q = new URLSearchParams(ctx.query);
    for (const [k, v] of Object.entries(changes)) {
      if (!v) q.delete(k);
      else q.set(k, String(v));
    }
    const search = q.toString();
    return `/ui/notifications${search ? `?${search}` : ""}`;
  };
  const options = KINDS.some(([v]) => v === kind) ? KINDS : [...KINDS, [kind, kind]];
  const filters = h(
    "div",
    { class: "filters" },
    select({ label: "Kind", id: "kind", value: kind, options, onChange: (value) => ctx.navigate(hrefFor({ kind: value, page: null })) }),
  );
  const results = h("div", { "data-testid": "test-slot" });
  const body = h("div");
  let poller = null;
  const sendTest = actionButton(ctx, {
    label: "Send test",
    iconName: "zap",
    attrs: { "data-testid": "send-test" },
    async onClick() {
      const answer = await ctx.api("notifications/test", { method: "POST" });
      results.replaceChildren(testCard(answer));
      ctx.toast(answer.ok ? "Test message sent on every channel" : "A channel failed: see the lines below", answer.ok ? "ok" : "err");
      poller?.kick();
    },
  });
  page.replaceChildren(
    pageHeader({
      title: "Notifications",
      subtitle: "Emails and webhook calls about ready datasets, failed jobs and syncs, with every delivery attempt.",
      actions: [sendTest],
    }),
    results,
    body,
  );

  const load = async () => {
    let data;
    try {
      const q = new URLSearchParams({ limit: PAGE, offset });
      if (kind) q.set("kind", kind);
      data = await ctx.api(`notifications?${q}`);
    } catch (err) {
      if (err.status === 403) {
        body.replaceChildren(adminOnly());
        return null;
      }
      throw err;
    }
    const rows = data.notifications || [];
    if (!rows.length) {
      body.replaceChildren(kind ? card(null, [h("div", { class: "card-toolbar" }, filters), noMatch()]) : nothingYet());
      return 10000;
    }
    body.replaceChildren(
      card(
        "Recent notifications",
        [
          h("div", { class: "table-wrap" }, notificationsTable(rows)),
          pagination({ total: data.total, offset, limit: PAGE, noun: "notifications", hrefFor: (o) => hrefFor({ page: o / PAGE + 1 }) }),
        ],
        { actions: filters, className: "card-flush" },
      ),
    );
    return 5000;
  };
  poller = ctx.loop(load);
  const delay = await load();
  if (delay) setTimeout(() => poller.kick(), delay);
}

function testCard(answer) {
  const items = (answer.results || []).map((r) =>
    h("li", { class: "test-line", "data-channel": r.channel, "data-ok": String(r.ok) }, pill(r.ok ? "sent" : "failed", r.ok ? "Sent" : "Failed"), h("span", { class: "mono small" }, r.line)),
  );
  return card("Test message", h("ul", { class: "test-lines", "data-testid": "test-results" }, items));
}

function notificationsTable(rows) {
  return h(
    "table",
    { class: "table", "data-testid": "notifications" },
    h("thead", null, h("tr", null, ["Created", "Kind", "About", "Deliveries"].map((t, i) => h("th", { class: i === 0 ? "nowrap" : null }, t)))),
    h(
      "tbody",
      null,
      rows.map((n) => {
        const facts = n.facts || {};
        const about = n.path || facts.source || null;
        const reason = facts.reason || facts.error || null;
        return h(
          "tr",
          { "data-kind": n.kind, "data-id": String(n.id) },
          h("td", { class: "nowrap muted" }, timeEl(n.created_at)),
          h("td", null, h("span", { class: "mono small" }, n.kind)),
          h(
            "td",
            { class: "cell-key" },
            about ? h("code", { class: "path", title: about }, about) : h("span", { class: "muted" }, "—"),
            reason ? h("div", { class: "muted small event-detail" }, String(reason)) : null,
          ),
          h("td", null, deliveries(n.deliveries || [])),
        );
      }),
    ),
  );
}

function deliveries(list) {
  if (!list.length) return h("span", { class: "muted small" }, "no delivery yet");
  return h(
    "ul",
    { class: "delivery-list" },
    list.map((d) => {
      const bits = [plural(d.attempts, "attempt")];
      if (d.last_status != null) bits.push(`HTTP ${d.last_status}`);
      if (d.digest) bits.push(`digest of ${d.digest_size}`);
      return h(
        "li",
        { class: "delivery", "data-channel": d.channel, "data-state": d.state },
        pill(d.state),
        h("span", { class: "small" }, d.channel),
        h("span", { class: "muted small" }, bits.join(" · ")),
        d.last_error ? h("div", { class: "muted small event-detail" }, d.last_error) : null,
      );
    }),
  );
}

function noMatch() {
  return emptyState({
    iconName: "inbox",
    title: "No notifications of this kind",
    actions: h("a", { class: "btn", href: "/ui/notifications" }, "Show all notifications"),
  });
}

function nothingYet() {
  return emptyState({
    iconName: "inbox",
    title: "No notifications sent yet",
    body: [
      h("p", null, "Add an ", h("code", null, "email:"), " block or ", h("code", null, "notify: webhooks:"), " to config.yaml, then press Send test (or run ", h("code", null, "mediamirror notify test"), ")."),
    ],
  });
}

function adminOnly() {
  return emptyState({
    iconName: "lock",
    title: "Notifications are shown to admins",
    body: h("p", null, "They name datasets and failure reasons: sign in with an admin token to see them."),
    actions: h("a", { class: "btn", href: "/ui/jobs" }, icon("activity"), "View jobs"),
  });
}
