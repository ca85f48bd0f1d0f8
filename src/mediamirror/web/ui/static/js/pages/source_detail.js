// One source: its settings, last syncs and "Sync now"; push set-up (URL shown once,
// rotation, ready-to-paste provider commands) with the last events received; edit and
// remove (with a confirmation that says what happens to the catalog).

import { isAbort } from "../api.js";
import { actionButton, card, pageHeader, pill, runsTable } from "../components.js";
import { fmtDate, fmtNumber, h, icon, timeEl } from "../dom.js";

const PROVIDERS = {
  aws: "AWS S3 (through an SNS topic)",
  minio: "MinIO (webhook target)",
  gcs: "Google Cloud Storage (Pub/Sub push)",
  "do-spaces": "DigitalOcean Spaces",
  "s3-compatible": "S3-compatible service",
};

export async function render(page, ctx) {
  const name = ctx.params.name;
  const path = `sources/${encodeURIComponent(name)}`;
  ctx.setTitle(name);
  let src = await ctx.api(path);

  const status = h("span", { class: "sd-status" });
  const settings = h("dl", { class: "facts sd-facts", "data-testid": "settings" });
  const runsBox = h("div", { class: "sd-runs", "data-testid": "runs" });
  const pushBox = h("div", { class: "sd-push", "data-testid": "push" });
  const eventsBox = h("div", { class: "sd-events", "data-testid": "events" });

  let waitingFor = null; // the last run id before "Sync now", until a newer one ends
  const actions = [];
  if (ctx.isAdmin) {
    actions.push(
      h("a", { class: "btn", href: `/ui/sources/${encodeURIComponent(name)}/edit`, "data-action": "edit" }, icon("terminal"), h("span", { class: "btn-label" }, "Edit")),
      actionButton(ctx, {
        label: "Sync now",
        iconName: "refresh",
        variant: "btn-primary",
        attrs: { "data-action": "sync" },
        onClick: async () => {
          waitingFor = src.last_run ? src.last_run.id : 0;
          await ctx.api(`${path}/sync`, { method: "POST" });
          ctx.toast(`Sync of ${name} started`);
          poller.kick();
        },
      }),
      h("button", { type: "button", class: "btn btn-danger-ghost", "data-action": "remove", onClick: () => confirmRemoval(ctx, name) }, icon("x"), h("span", { class: "btn-label" }, "Remove")),
    );
  }

  page.replaceChildren(
    pageHeader({
      crumbs: [{ label: "Sources", href: "/ui/sources" }, { label: name }],
      title: name,
      badges: [status],
      subtitle: "Mirrored read-only: nothing is ever written to the source.",
      actions,
    }),
    h(
      "div",
      { class: "sd-grid" },
      card("Settings", settings, { className: "sd-settings" }),
      card("Last syncs", runsBox, { className: "sd-runs-card" }),
    ),
    card("Push notifications", pushBox, { className: "sd-push-card" }),
    card("Last events received", eventsBox, { className: "sd-events-card" }),
  );

  const showSource = () => {
    const run = src.last_run;
    status.replaceChildren(src.syncing ? pill("syncing", "Syncing…") : run ? pill(run.state, run.state === "success" ? "Synced" : null) : pill("new", "Never synced"));
    settings.replaceChildren(...facts(src).flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
    const sync = page.querySelector("[data-action=sync]");
    if (sync) {
      sync.classList.toggle("is-syncing", Boolean(src.syncing));
      if (src.syncing) sync.setAttribute("disabled", "");
      else sync.removeAttribute("disabled");
    }
  };

  const poller = ctx.loop(async () => {
    src = await ctx.api(path);
    showSource();
    const runs = await ctx.api(`${path}/runs?limit=10`);
    showRuns(runsBox, runs, ctx.isAdmin);
    const newest = runs[0];
    if (waitingFor !== null && newest && newest.id !== waitingFor && newest.finished_at) {
      waitingFor = null;
      if (newest.state === "success") ctx.toast(`${name}: synced — ${fmtNumber(newest.added)} added, ${fmtNumber(newest.changed)} changed, ${fmtNumber(newest.deleted)} deleted`);
      else ctx.banner.error(`Sync of ${name} ended ${newest.state}${newest.error ? `: ${newest.error}` : ""}`);
    }
    return src.syncing || waitingFor !== null ? 1000 : 15000;
  });
  showSource();
  poller.start();
  loadPush(ctx, path, pushBox, eventsBox);
}

function facts(src) {
  const code = (v) => h("code", { class: "path" }, v);
  const creds = src.credentials || {};
  const credText = creds.access_key_env || creds.secret_key_env
    ? ["environment variables ", code(creds.access_key_env || "—"), " and ", code(creds.secret_key_env || "—")]
    : src.aws_profile
      ? ["AWS profile ", code(src.aws_profile)]
      : "the usual AWS variables or the instance's role";
  const p = src.profile || {};
  return [
    ["URL", code(src.url)],
    ["Mount", src.mount_folder_id ? h("a", { href: `/ui/browse/${src.mount_folder_id}`, class: "path" }, src.mount) : code(src.mount)],
    src.preset ? ["Preset", src.preset] : null,
    src.endpoint_url ? ["Endpoint", code(src.endpoint_url)] : null,
    src.region ? ["Region", src.region] : null,
    /^(s3|gs):/.test(src.url) ? ["Credentials", h("span", null, credText)] : null,
    ["Include", src.include ? code(src.include) : h("span", { class: "muted" }, "every key")],
    ["Exclude", src.exclude ? code(src.exclude) : h("span", { class: "muted" }, "nothing")],
    ["Schedule", src.schedule ? code(src.schedule) : h("span", { class: "muted" }, "none: synced when asked")],
    ["Images", p.images || "auto"],
    ["Processors", Array.isArray(p.processors) ? p.processors.join(", ") : "all that apply"],
    ["Output", p.output || "—"],
    ["Output layout", p.output_layout || "catalog"],
    ["Added", h("span", { title: fmtDate(src.created_at) }, timeEl(src.created_at))],
  ].filter(Boolean);
}

function showRuns(box, runs, isAdmin) {
  if (!runs.length) {
    box.replaceChildren(h("p", { class: "card-empty" }, isAdmin ? "Not synced yet. Sync now mirrors it for the first time." : "Not synced yet."));
    return;
  }
  box.replaceChildren(runsTable(runs));
}

// -- push set-up -------------------------------------------------------------------------------

async function loadPush(ctx, path, pushBox, eventsBox) {
  try {
    const setup = await ctx.api(`${path}/push`);
    showPush(ctx, path, pushBox, setup);
  } catch (err) {
    if (!isAbort(err)) pushBox.replaceChildren(h("p", { class: "card-empty" }, `The push set-up could not be loaded: ${err.message}`));
  }
  const events = ctx.loop(async () => {
    showEvents(eventsBox, await ctx.api(`${path}/events?limit=20`));
    return 10000;
  });
  events.start();
}

function showPush(ctx, path, box, setup) {
  if (!setup.supported) {
    box.replaceChildren(h("p", { class: "card-empty", "data-testid": "push-unsupported" }, capitalize(setup.message) + "."));
    return;
  }
  const parts = [];
  const provider = PROVIDERS[setup.provider] || setup.provider;
  parts.push(
    h(
      "dl",
      { class: "facts" },
      h("dt", null, "Provider"),
      h("dd", null, provider),
      h("dt", null, "Endpoint"),
      h("dd", null, h("code", { class: "path", "data-testid": "push-endpoint" }, setup.endpoint)),
      h("dt", null, "Token"),
      h(
        "dd",
        { "data-testid": "token-state" },
        setup.token_shown
          ? "New token: shown below, once."
          : setup.has_token
            ? "A token exists (only its hash is kept). Rotate it to see a new URL; the current one then stops working."
            : ctx.isAdmin
              ? "No token yet: create one to get this source's push URL."
              : "No token yet: an admin creates it on this page.",
      ),
    ),
  );
  if (setup.token_shown) {
    parts.push(
      h(
        "div",
        { class: "sd-once", role: "status", "data-testid": "push-url-once" },
        h("p", { class: "sd-once-title" }, icon("key", "icon icon-sm"), "Copy this URL now: it is shown only once. The snippets below carry it too."),
        copyable(ctx, setup.url, "push URL", "sd-url"),
      ),
    );
  }
  if (ctx.isAdmin) {
    const label = setup.has_token ? "Rotate token" : "Create push URL";
    parts.push(
      h(
        "div",
        { class: "sd-push-actions" },
        actionButton(ctx, {
          label,
          iconName: "key",
          variant: setup.has_token ? "" : "btn-primary",
          attrs: { "data-action": "rotate" },
          onClick: async () => {
            if (setup.has_token && !window.confirm("Rotate the push token? The current URL stops working at once: update the bucket's configuration with the new one.")) return;
            const fresh = await ctx.api(`${path}/push-token`, { method: "POST" });
            showPush(ctx, path, box, fresh);
            box.querySelector("[data-testid=push-url-once] code")?.focus();
          },
        }),
      ),
    );
  }
  if (setup.note) parts.push(h("p", { class: "form-note" }, icon("alert", "icon icon-sm"), setup.note));
  const primary = setup.snippets.filter((s) => s.primary);
  const others = setup.snippets.filter((s) => !s.primary);
  if (!setup.token_shown && setup.snippets.length) {
    parts.push(h("p", { class: "field-help sd-placeholder" }, "In the set-up below, ", h("code", null, "TOKEN"), " stands for the token of the push URL, shown when it is created or rotated."));
  }
  parts.push(h("div", { class: "sd-snippets" }, primary.map((s) => snippet(ctx, s))));
  if (others.length) {
    parts.push(h("details", { class: "sd-other" }, h("summary", null, "Other senders"), h("div", { class: "sd-snippets" }, others.map((s) => snippet(ctx, s)))));
  }
  box.replaceChildren(...parts);
}

function snippet(ctx, s) {
  return h(
    "section",
    { class: "sd-snippet", "data-snippet": s.id, "aria-label": s.title },
    h("h3", { class: "sd-snippet-title" }, s.title),
    copyable(ctx, s.text, s.title, "sd-code", true),
    s.help ? h("p", { class: "field-help" }, s.help) : null,
  );
}

/** Text in a code block with a Copy button; without clipboard access the text is
 * selected instead, so Ctrl+C copies it. */
function copyable(ctx, text, what, className, block = false) {
  const code = block
    ? h("pre", { class: ["code-block", className], tabindex: "0" }, h("code", null, text))
    : h("code", { class: ["path", className], tabindex: "0" }, text);
  const button = h("button", { type: "button", class: "btn btn-sm sd-copy", "aria-label": `Copy ${what}` }, icon("download", "icon icon-sm"), h("span", { class: "btn-label" }, "Copy"));
  const note = h("span", { class: "sd-copy-note", role: "status" });
  button.addEventListener("click", async () => {
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard");
      await navigator.clipboard.writeText(text);
      note.textContent = "Copied.";
      ctx.toast(`Copied the ${what}`);
    } catch {
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      note.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
    }
  });
  return h("div", { class: ["sd-copyable", block && "sd-copyable-block"] }, code, h("div", { class: "sd-copy-row" }, button, note));
}

function showEvents(box, data) {
  const parts = [];
  if (!data.events.length) {
    parts.push(h("p", { class: "card-empty" }, "No events received yet. Once the bucket sends one, it shows here with what became of it."));
  } else {
    parts.push(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "table table-sm" },
          h("caption", { class: "sr-only" }, "Last events received for this source, newest first"),
          h("thead", null, h("tr", null, ["Received", "Channel", "Event", "Key", "Outcome"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            null,
            data.events.map((e) =>
              h(
                "tr",
                { "data-event": e.id },
                h("td", { class: "nowrap" }, timeEl(e.received_at)),
                h("td", null, e.channel),
                h("td", null, e.event_type || "—"),
                h("td", null, e.key ? h("code", { class: "path" }, e.key) : "—"),
                h("td", null, pill(e.outcome), e.detail ? h("div", { class: "muted small" }, e.detail) : null),
              ),
            ),
          ),
        ),
      ),
    );
    if (data.total > data.events.length) parts.push(h("p", { class: "card-foot muted small" }, `${fmtNumber(data.total)} events in all: `, h("a", { href: "/ui/events" }, "see the events log")));
  }
  if (data.refusals && data.refusals.length) {
    parts.push(
      h(
        "div",
        { class: "sd-refusals" },
        h("h3", { class: "sd-snippet-title" }, "Refused deliveries"),
        h(
          "ul",
          null,
          data.refusals.map((r) => h("li", null, pill("rejected", `${fmtNumber(r.count)} × ${r.reason}`), ` ${r.channel}, last `, timeEl(r.last_at), r.detail ? h("span", { class: "muted" }, ` — ${r.detail}`) : null)),
        ),
      ),
    );
  }
  box.replaceChildren(...parts);
}

// -- removal -----------------------------------------------------------------------------------

async function confirmRemoval(ctx, name) {
  let impact;
  try {
    impact = await ctx.api(`sources/${encodeURIComponent(name)}/removal`);
  } catch (err) {
    if (!isAbort(err)) ctx.banner.error(err.message);
    return;
  }
  const input = h("input", { class: "input input-mono", id: "sd-confirm-name", autocomplete: "off", spellcheck: "false", "aria-describedby": "sd-confirm-help" });
  const remove = h("button", { type: "submit", class: "btn sd-danger", disabled: true, "data-action": "confirm-remove" }, icon("x"), h("span", { class: "btn-label" }, `Remove ${name}`));
  const cancel = h("button", { type: "button", class: "btn btn-ghost", "data-action": "cancel" }, "Cancel");
  const message = h("p", { class: "form-message", role: "alert", hidden: true });
  const form = h(
    "form",
    { method: "dialog", class: "sd-dialog-body" },
    h("h2", { class: "sd-dialog-title", id: "sd-dialog-title" }, `Remove source ${name}?`),
    h("p", { id: "sd-dialog-desc", "data-testid": "removal-message" }, impact.message),
    h("ul", { class: "sd-dialog-list" }, [
      h("li", null, "Its push token goes too: notifications from the bucket are refused from then on."),
      h("li", null, "Adding the source again later mirrors it afresh, with new ids."),
    ]),
    h("label", { class: "field-label", for: "sd-confirm-name" }, "Type the source name to confirm"),
    input,
    h("p", { class: "field-help", id: "sd-confirm-help" }, `Type ${name} exactly. Escape cancels.`),
    message,
    h("div", { class: "sf-actions" }, remove, cancel),
  );
  const dialog = h("dialog", { class: "sd-dialog", "aria-labelledby": "sd-dialog-title", "aria-describedby": "sd-dialog-desc" }, form);
  const opener = document.activeElement;
  const close = () => {
    dialog.close();
    dialog.remove();
    if (opener && opener.isConnected) opener.focus();
  };
  input.addEventListener("input", () => {
    remove.disabled = input.value.trim() !== name;
  });
  cancel.addEventListener("click", close);
  dialog.addEventListener("cancel", (event) => {
    event.preventDefault();
    close();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (input.value.trim() !== name) return;
    remove.disabled = true;
    remove.classList.add("is-busy");
    try {
      await ctx.api(`sources/${encodeURIComponent(name)}`, { method: "DELETE" });
      dialog.close();
      dialog.remove();
      ctx.toast(`Source ${name} removed`);
      ctx.navigate("/ui/sources");
    } catch (err) {
      message.textContent = String(err.message || err).split("\n")[0];
      message.hidden = false;
      remove.disabled = false;
      remove.classList.remove("is-busy");
    }
  });
  document.body.append(dialog);
  dialog.showModal();
  input.focus();
}

function capitalize(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : "";
}
