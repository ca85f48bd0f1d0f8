// Add a source (every option of `mediamirror source add`, with "Check connection" before
// anything is saved) or edit one (filters, schedule, profile: `mediamirror source set`).
// Credentials are never typed here: the form names environment variables or a profile.

import { isAbort } from "../api.js";
import { emptyState, pageHeader } from "../components.js";
import { h, icon } from "../dom.js";

const PRESETS = [
  ["", "Automatic (from the URL)"],
  ["aws", "AWS S3"],
  ["minio", "MinIO"],
  ["do-spaces", "DigitalOcean Spaces"],
  ["gcs", "Google Cloud Storage (HMAC keys)"],
];
const IMAGES = [
  ["auto", "auto: sequences, large images by size"],
  ["large-image", "large-image: every image its own pyramid"],
  ["sequence", "sequence: images stay frames of their folder"],
];
const LAYOUTS = [
  ["catalog", "catalog: pyramids/<source>/…"],
  ["mirror", "mirror: the source key's path"],
];
const ADDRESSING = [
  ["", "Preset's default"],
  ["auto", "auto"],
  ["path", "path (bucket in the path)"],
  ["virtual", "virtual (bucket in the host name)"],
];
const EDITABLE = ["include", "exclude", "schedule", "images", "processors", "output_url", "output_layout", "output_endpoint_url"];

export async function render(page, ctx) {
  const name = ctx.params.name;
  const title = name ? `Edit ${name}` : "Add a source";
  ctx.setTitle(title);
  const crumbs = [{ label: "Sources", href: "/ui/sources" }];
  if (name) crumbs.push({ label: name, href: `/ui/sources/${encodeURIComponent(name)}` });
  crumbs.push({ label: name ? "Edit" : "Add" });
  const header = pageHeader({
    crumbs,
    title,
    subtitle: name
      ? "Change what is mirrored (filters), when (schedule) and how it is processed (profile)."
      : "Mirror a bucket or a folder into the catalog. Check the connection first: nothing is saved until you add the source.",
  });
  if (!ctx.isAdmin) {
    page.replaceChildren(
      header,
      emptyState({
        iconName: "lock",
        title: "Needs an admin token",
        body: h("p", null, "You are signed in as a viewer: adding and changing sources needs an admin token."),
        actions: h("a", { class: "btn", href: "/ui/sources" }, "Back to sources"),
      }),
    );
    return;
  }
  if (name) {
    const src = await ctx.api(`sources/${encodeURIComponent(name)}`);
    page.replaceChildren(header, editForm(ctx, src));
  } else {
    page.replaceChildren(header, addForm(ctx));
  }
  page.querySelector("input:not([type=radio]), select")?.focus();
}

// -- fields ------------------------------------------------------------------------------------

function textInput(id, { value = "", mono = true, placeholder, required, type = "text" } = {}) {
  return h("input", {
    class: ["input", mono && "input-mono"],
    id,
    name: id,
    type,
    value: value ?? "",
    placeholder,
    required,
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": `${id}-help`,
  });
}

function selectInput(id, options, value = "") {
  const el = h(
    "select",
    { class: "select sf-select", id, name: id, "aria-describedby": `${id}-help` },
    options.map(([v, text]) => h("option", { value: v }, text)),
  );
  el.value = value ?? "";
  return el;
}

function field(id, label, control, help, { required = false } = {}) {
  return h(
    "div",
    { class: "sf-field", "data-field": id },
    h("label", { class: "field-label", for: id }, label, required ? h("span", { class: "sf-required" }, " (required)") : null),
    control,
    help ? h("p", { class: "field-help", id: `${id}-help` }, help) : null,
  );
}

function section(legend, note, ...fields) {
  return h("fieldset", { class: "sf-section" }, h("legend", { class: "sf-legend" }, legend), note ? h("p", { class: "field-help sf-note" }, note) : null, h("div", { class: "sf-grid" }, fields));
}

/** The one-line outcome under the buttons: ok (green), error (red) or progress. */
function resultLine() {
  const el = h("div", { class: "sf-result", role: "status", "aria-live": "polite", "data-testid": "form-result" });
  return {
    el,
    clear() {
      el.replaceChildren();
      el.className = "sf-result";
    },
    ok(text, extra) {
      el.className = "sf-result sf-ok";
      el.replaceChildren(h("p", { class: "sf-line" }, icon("check", "icon icon-sm"), h("span", { "data-testid": "result-text" }, text)), extra || null);
    },
    error(text) {
      el.className = "sf-result sf-err";
      el.replaceChildren(h("p", { class: "sf-line", role: "alert" }, icon("alert", "icon icon-sm"), h("span", { "data-testid": "result-text" }, text)));
    },
  };
}

function oneLine(err) {
  return String(err?.message || err).split("\n")[0];
}

// -- add ---------------------------------------------------------------------------------------

function addForm(ctx) {
  const f = {
    name: textInput("sf-name", { placeholder: "field-videos", required: true }),
    url: textInput("sf-url", { placeholder: "s3://my-bucket/campaign-2024", required: true }),
    preset: selectInput("sf-preset", PRESETS),
    endpoint_url: textInput("sf-endpoint", { placeholder: "http://127.0.0.1:9000" }),
    region: textInput("sf-region", { placeholder: "eu-west-1" }),
    addressing: selectInput("sf-addressing", ADDRESSING),
    profile: textInput("sf-profile", { placeholder: "research" }),
    access_key_env: textInput("sf-access-env", { placeholder: "MY_ACCESS_KEY_ID" }),
    secret_key_env: textInput("sf-secret-env", { placeholder: "MY_SECRET_ACCESS_KEY" }),
    mount: textInput("sf-mount", { placeholder: "/NAME" }),
    include: textInput("sf-include", { placeholder: "\\.mp4$" }),
    exclude: textInput("sf-exclude", { placeholder: "(^|/)tmp/" }),
    schedule: textInput("sf-schedule", { placeholder: "*/15 * * * *" }),
    images: selectInput("sf-images", IMAGES, "auto"),
    processors: textInput("sf-processors", { placeholder: "all" }),
    output_url: textInput("sf-output", { placeholder: "s3://derived-bucket" }),
    output_layout: selectInput("sf-output-layout", LAYOUTS, "catalog"),
    output_endpoint_url: textInput("sf-output-endpoint", { placeholder: "https://s3.us-east-1.amazonaws.com" }),
  };
  const credMode = credentialChooser();
  const credFields = {
    profile: field("sf-profile", "AWS profile", f.profile, "A profile of the server's ~/.aws/config and credentials files."),
    env: h(
      "div",
      { class: "sf-grid" },
      field("sf-access-env", "Access key variable", f.access_key_env, "Name of the environment variable holding the access key id."),
      field("sf-secret-env", "Secret key variable", f.secret_key_env, "Name of the environment variable holding the secret key."),
    ),
  };
  const credBox = h("div", { class: "sf-cred-fields" });
  const showCred = () => {
    const mode = credMode.value();
    credBox.replaceChildren(...(mode === "profile" ? [credFields.profile] : mode === "env" ? [credFields.env] : []));
  };
  credMode.onChange(showCred);
  showCred();

  const result = resultLine();
  const checkBtn = h("button", { type: "button", class: "btn", "data-action": "check" }, icon("zap"), h("span", { class: "btn-label" }, "Check connection"));
  const saveBtn = h("button", { type: "submit", class: "btn btn-primary", "data-action": "save" }, icon("check"), h("span", { class: "btn-label" }, "Add source"));

  const body = () => {
    const out = {};
    for (const [key, el] of Object.entries(f)) {
      const value = el.value.trim();
      if (value) out[key] = value;
    }
    const mode = credMode.value();
    if (mode !== "profile") delete out.profile;
    if (mode !== "env") {
      delete out.access_key_env;
      delete out.secret_key_env;
    }
    if (out.images === "auto") delete out.images;
    if (out.output_layout === "catalog") delete out.output_layout;
    return out;
  };
  const missing = (b) => {
    if (!b.name) return [f.name, "Give the source a name (letters, digits, '.', '_' and '-')."];
    if (!b.url) return [f.url, "Give the URL of the bucket or folder, e.g. s3://my-bucket/videos or file:///srv/media."];
    if (credMode.value() === "env" && !(b.access_key_env && b.secret_key_env)) return [f.access_key_env, "Name both environment variables (access key and secret key), or choose another kind of credentials."];
    if (credMode.value() === "profile" && !b.profile) return [f.profile, "Name the AWS profile, or choose another kind of credentials."];
    return null;
  };

  const busy = async (button, fn) => {
    if (button.classList.contains("is-busy")) return;
    button.classList.add("is-busy");
    button.setAttribute("aria-busy", "true");
    checkBtn.disabled = saveBtn.disabled = true;
    try {
      await fn();
    } finally {
      button.classList.remove("is-busy");
      button.removeAttribute("aria-busy");
      checkBtn.disabled = saveBtn.disabled = false;
    }
  };

  // The form's body, or null after saying (and focusing) what is missing.
  const checkedBody = () => {
    const b = body();
    const bad = missing(b);
    if (bad) {
      result.error(bad[1]);
      bad[0].focus();
      return null;
    }
    result.clear();
    return b;
  };

  const runCheck = () =>
    busy(checkBtn, async () => {
      const b = checkedBody();
      if (!b) return;
      checkedOk = false;
      staleNote.remove();
      try {
        const answer = await ctx.api("sources/check", { method: "POST", body: b });
        if (answer.ok) {
          checkedOk = true;
          const sample = answer.sample && answer.sample.length
            ? h("ul", { class: "sf-sample", "aria-label": "First keys" }, answer.sample.map((k) => h("li", null, h("code", null, k))))
            : null;
          result.ok(`Connection works: ${answer.message}`, sample);
        } else {
          result.error(answer.message);
        }
      } catch (err) {
        if (!isAbort(err)) result.error(oneLine(err));
      }
    });

  checkBtn.addEventListener("click", runCheck);
  // A check answers for the values it was given: once one changes, say so.
  let checkedOk = false;
  const staleNote = h("p", { class: "field-help sf-stale", "data-testid": "check-stale" }, "A value changed since this check: check again.");


  const form = h(
    "form",
    { class: "sf-form card", novalidate: true, "aria-label": "New source" },
    section(
      "Where",
      null,
      field("sf-name", "Name", f.name, "Used in commands and URLs: letters, digits, '.', '_' and '-'.", { required: true }),
      field("sf-url", "URL", f.url, ["s3://bucket/prefix, gs://bucket/prefix, file:///path or feed://NAME (a ", h("code", null, "feeds:"), " block of config.yaml)."], { required: true }),
      field("sf-preset", "Preset", f.preset, "The S3-compatible service: sets its usual endpoint, addressing and credential variables."),
      field("sf-endpoint", "Endpoint URL", f.endpoint_url, "S3 API endpoint, e.g. http://127.0.0.1:9000 for MinIO. Empty: the preset's (AWS's by default)."),
      field("sf-region", "Region", f.region, "Region of the bucket (DigitalOcean Spaces: DO_SPACES_REGION if empty)."),
      field("sf-addressing", "Addressing", f.addressing, "How the bucket is named in requests; the preset's default almost always works."),
    ),
    section(
      "Credentials",
      "Secrets are never typed here, stored or shown: the source keeps the names of the server's environment variables (or its AWS profile) and reads the values only when it lists the bucket.",
      credMode.el,
      credBox,
    ),
    section(
      "Catalog",
      null,
      field("sf-mount", "Mount folder", f.mount, "Catalog folder the source is mirrored into. Empty: /NAME."),
      field("sf-schedule", "Schedule", f.schedule, "A cron expression to re-sync on while the service runs, e.g. */15 * * * * (every 15 minutes). Empty: sync when asked."),
      field("sf-include", "Include (regex)", f.include, "Only keys (relative to the prefix) matching this regular expression."),
      field("sf-exclude", "Exclude (regex)", f.exclude, "Skip keys (relative to the prefix) matching this regular expression."),
    ),
    profileSection(f),
    h(
      "div",
      { class: "sf-actions" },
      checkBtn,
      saveBtn,
      h("a", { class: "btn btn-ghost", href: "/ui/sources" }, "Cancel"),
    ),
    result.el,
  );

  form.addEventListener("input", () => {
    if (checkedOk && !staleNote.isConnected) result.el.append(staleNote);
  });
  form.addEventListener("change", () => {
    if (checkedOk && !staleNote.isConnected) result.el.append(staleNote);
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await busy(saveBtn, async () => {
      const b = checkedBody();
      if (!b) return;
      try {
        const created = await ctx.api("sources", { method: "POST", body: { ...b, check: true } });
        ctx.toast(`Source ${created.name} added`);
        ctx.navigate(`/ui/sources/${encodeURIComponent(created.name)}`);
      } catch (err) {
        if (!isAbort(err)) result.error(oneLine(err));
      }
    });
  });
  return form;
}

function profileSection(f) {
  return section(
    "Processing profile",
    "What this source's images become, which processors run for its datasets and where their files go.",
    field(f.images.id, "Images", f.images, "What raster images become."),
    field(f.processors.id, "Processors", f.processors, "Comma-separated names, e.g. video,pose. Empty or 'all': every processor that applies."),
    field(f.output_url.id, "Output store", f.output_url, "Store this source's derived files go to. Empty: the installation's output store."),
    field(f.output_layout.id, "Output layout", f.output_layout, "How derived files are named in the output store."),
    field(f.output_endpoint_url.id, "Output endpoint URL", f.output_endpoint_url, "S3 API endpoint of the output store. Empty: the installation's setting."),
  );
}

/** Three ways to give credentials, as radio buttons in one group. */
function credentialChooser() {
  const name = "sf-cred-mode";
  const choices = [
    ["default", "Default", "The preset's variables (e.g. DO_SPACES_KEY) or the usual AWS ones (AWS_ACCESS_KEY_ID, …, instance role)."],
    ["env", "Environment variables", "Name the two variables holding the keys on the server."],
    ["profile", "AWS profile", "A named profile of the server's AWS configuration."],
  ];
  const inputs = [];
  const el = h(
    "div",
    { class: "sf-radios", role: "radiogroup", "aria-label": "Where the credentials come from" },
    choices.map(([value, label, help], i) => {
      const input = h("input", { type: "radio", name, id: `${name}-${value}`, value, checked: i === 0, "aria-describedby": `${name}-${value}-help` });
      inputs.push(input);
      return h(
        "label",
        { class: "sf-radio", for: `${name}-${value}` },
        input,
        h("span", null, h("span", { class: "sf-radio-label" }, label), h("span", { class: "field-help", id: `${name}-${value}-help` }, help)),
      );
    }),
  );
  return {
    el,
    value: () => inputs.find((i) => i.checked)?.value || "default",
    onChange: (fn) => inputs.forEach((i) => i.addEventListener("change", fn)),
  };
}

// -- edit --------------------------------------------------------------------------------------

function initialValues(src) {
  const p = src.profile || {};
  const output = typeof p.output === "string" && !p.output.startsWith("(") ? p.output : "";
  return {
    include: src.include || "",
    exclude: src.exclude || "",
    schedule: src.schedule || "",
    images: p.images || "auto",
    processors: Array.isArray(p.processors) ? p.processors.join(",") : "",
    output_url: output,
    output_layout: p.output_layout || "catalog",
    output_endpoint_url: p.output_endpoint_url || "",
  };
}

function editForm(ctx, src) {
  let initial = initialValues(src);
  const f = {
    include: textInput("sf-include", { value: initial.include }),
    exclude: textInput("sf-exclude", { value: initial.exclude }),
    schedule: textInput("sf-schedule", { value: initial.schedule, placeholder: "*/15 * * * *" }),
    images: selectInput("sf-images", IMAGES, initial.images),
    processors: textInput("sf-processors", { value: initial.processors, placeholder: "all" }),
    output_url: textInput("sf-output", { value: initial.output_url, placeholder: "(installation's output store)" }),
    output_layout: selectInput("sf-output-layout", LAYOUTS, initial.output_layout),
    output_endpoint_url: textInput("sf-output-endpoint", { value: initial.output_endpoint_url }),
  };
  const result = resultLine();
  const saveBtn = h("button", { type: "submit", class: "btn btn-primary", "data-action": "save" }, icon("check"), h("span", { class: "btn-label" }, "Save changes"));
  const back = `/ui/sources/${encodeURIComponent(src.name)}`;

  const form = h(
    "form",
    { class: "sf-form card", novalidate: true, "aria-label": `Edit ${src.name}` },
    h(
      "div",
      { class: "sf-fixed" },
      h("p", { class: "field-help" }, "Mirrors ", h("code", null, src.url), " into ", h("code", null, src.mount), ". To point it elsewhere, remove it and add it again."),
    ),
    section(
      "Filters and schedule",
      "A changed filter applies from the next sync: keys it now leaves out are marked deleted, keys it lets in are added.",
      field("sf-include", "Include (regex)", f.include, "Only keys (relative to the prefix) matching. Empty: every key."),
      field("sf-exclude", "Exclude (regex)", f.exclude, "Skip keys (relative to the prefix) matching. Empty: none skipped."),
      field("sf-schedule", "Schedule", f.schedule, "A cron expression to re-sync on while the service runs. Empty: no schedule."),
    ),
    profileSection(f),
    h("div", { class: "sf-actions" }, saveBtn, h("a", { class: "btn btn-ghost", href: back }, "Back to the source")),
    result.el,
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (saveBtn.classList.contains("is-busy")) return;
    const now = Object.fromEntries(EDITABLE.map((k) => [k, f[k].value.trim()]));
    const changes = Object.fromEntries(EDITABLE.filter((k) => now[k] !== initial[k]).map((k) => [k, now[k]]));
    if (!Object.keys(changes).length) {
      result.ok("Nothing changed: every value is as it was.");
      return;
    }
    saveBtn.classList.add("is-busy");
    saveBtn.setAttribute("aria-busy", "true");
    try {
      const answer = await ctx.api(`sources/${encodeURIComponent(src.name)}`, { method: "PATCH", body: changes });
      initial = initialValues(answer);
      const lines = answer.changed || [];
      result.ok(
        lines.length ? `Saved: ${lines.length === 1 ? "1 change" : `${lines.length} changes`}.` : "Saved: nothing differed from the stored values.",
        lines.length ? h("ul", { class: "sf-changed", "data-testid": "changed" }, lines.map((l) => h("li", null, h("code", null, l)))) : null,
      );
      ctx.toast(`${src.name} saved`);
    } catch (err) {
      if (!isAbort(err)) result.error(oneLine(err));
    } finally {
      saveBtn.classList.remove("is-busy");
      saveBtn.removeAttribute("aria-busy");
    }
  });
  return form;
}
