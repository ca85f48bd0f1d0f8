// Search results: the text and every filter as controls, all reflected in the URL
// (/ui/search?q=&type=&status=&source=&processor_state=&meta=k:v&page=), one page at a time.

import { ApiError } from "../api.js";
import { DATASET_TYPES, card, emptyState, pageHeader, pagination, pill, typeBadge } from "../components.js";
import { fmtNumber, h, icon } from "../dom.js";
import { magnifier } from "../searchbox.js";

const PAGE = 25;
const TYPES = [
  ["", "Any kind"],
  ["dataset", "Any dataset"],
  ["video", "Video"],
  ["image-sequence", "Image sequence"],
  ["large-image", "Large image"],
  ["folder", "Folder"],
];
const STATUSES = [
  ["", "Any status"],
  ["ready", "Ready"],
  ["pending", "Pending"],
  ["error", "Error"],
  ["new", "New"],
  ["empty", "Empty (gone from the bucket)"],
];
const PROCESSOR_STATES = [
  ["", "Any job state"],
  ["success", "Succeeded"],
  ["error", "Failed"],
  ["queued", "Queued"],
  ["running", "Running"],
  ["canceled", "Canceled"],
];
const FIELDS = ["q", "type", "status", "source", "processor_state"];

export async function render(page, ctx) {
  const current = readQuery(ctx.query);
  ctx.setTitle(current.q ? `“${current.q}” · Search` : "Search");

  const hrefFor = (changes) => {
    const next = { ...current, ...changes };
    const params = new URLSearchParams();
    for (const key of FIELDS) if (next[key]) params.set(key, next[key]);
    for (const entry of next.meta) params.append("meta", entry);
    if (next.page > 1) params.set("page", String(next.page));
    const text = params.toString();
    return `/ui/search${text ? `?${text}` : ""}`;
  };
  const apply = (changes) => ctx.navigate(hrefFor({ ...changes, page: 1 }));

  const sources = await ctx.api("sources").catch(() => []);
  const results = h("div", { class: "search-results", "aria-live": "polite", "aria-busy": "true" });
  page.replaceChildren(
    pageHeader({ title: "Search", subtitle: "Folders and datasets whose name or path contains every word you type." }),
    filtersForm(current, sources, apply),
    results,
  );

  const filtered = FIELDS.slice(1).some((k) => current[k]) || current.meta.length > 0;
  if (!current.q && !filtered) {
    results.removeAttribute("aria-busy");
    results.replaceChildren(
      emptyState({
        iconName: "folder",
        title: "Search the catalog",
        body: h("p", null, "Type part of a name or path above, or pick a filter (for example Status: Error) to list what matches. Press / on any page to search from the box at the top."),
      }),
    );
    return;
  }

  const offset = (current.page - 1) * PAGE;
  const params = new URLSearchParams();
  for (const key of FIELDS) if (current[key]) params.set(key, current[key]);
  for (const entry of current.meta) params.append("meta", entry);
  params.set("limit", String(PAGE));
  params.set("offset", String(offset));
  let body;
  try {
    body = await ctx.api(`search?${params}`);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 400) throw err;
    results.removeAttribute("aria-busy");
    results.replaceChildren(
      emptyState({
        iconName: "alert",
        title: "These filters cannot be used",
        body: h("p", { "data-testid": "search-error" }, err.message),
        actions: h("a", { class: "btn", href: hrefFor({ type: "", status: "", source: "", processor_state: "", meta: [] }) }, "Clear the filters"),
      }),
    );
    return;
  }
  results.removeAttribute("aria-busy");
  if (!body.results.length) {
    results.replaceChildren(noMatch(current, body, hrefFor, filtered));
    return;
  }
  results.replaceChildren(
    card(null, [
      h("p", { class: "search-summary" }, `${fmtNumber(body.total)} match${body.total === 1 ? "" : "es"}${current.q ? ` for “${current.q}”` : ""}`),
      h("ul", { class: "search-list", "data-testid": "search-results" }, body.results.map(resultRow)),
      pagination({ total: body.total, offset: body.offset, limit: PAGE, noun: "results", hrefFor: (o) => hrefFor({ page: o / PAGE + 1 }) }),
    ], { className: "card-flush" }),
  );
}

function readQuery(query) {
  const page = Math.max(1, Number.parseInt(query.get("page") || "1", 10) || 1);
  const out = { page, meta: query.getAll("meta").filter(Boolean) };
  for (const key of FIELDS) out[key] = (query.get(key) || "").trim();
  return out;
}

function filtersForm(current, sources, apply) {
  const text = h("input", {
    id: "search-q",
    class: "input search-q",
    type: "search",
    name: "q",
    value: current.q,
    placeholder: "Part of a name or path",
    autocomplete: "off",
    spellcheck: "false",
  });
  const chooser = (id, label, options, value, key) => {
    const el = h(
      "select",
      { id, class: "select", name: key, onChange: () => apply({ [key]: el.value }) },
      options.map(([v, t]) => h("option", { value: v }, t)),
    );
    // A value from the URL that the list lacks stays visible (and the server judges it).
    if (value && !options.some(([v]) => v === value)) el.append(h("option", { value }, value));
    el.value = value;
    return h("div", { class: "search-field" }, h("label", { class: "field-label", for: id }, label), el);
  };
  const sourceOptions = [["", "Any source"], ...sources.map((s) => [s.name, s.name])];
  const [procName, procState] = splitProcessorState(current.processor_state);
  const processor = h("input", {
    id: "search-processor",
    class: "input search-small-input",
    name: "processor",
    value: procName,
    placeholder: "any",
    autocomplete: "off",
    spellcheck: "false",
  });
  const state = h(
    "select",
    { id: "search-processor-state", class: "select", name: "processor_state" },
    PROCESSOR_STATES.map(([v, t]) => h("option", { value: v }, t)),
  );
  state.value = PROCESSOR_STATES.some(([v]) => v === procState) ? procState : "";
  const processorState = () => {
    const name = processor.value.trim();
    return state.value ? (name ? `${name}:${state.value}` : state.value) : "";
  };
  state.addEventListener("change", () => apply({ processor_state: processorState() }));

  const metaInput = h("input", {
    id: "search-meta",
    class: "input search-small-input",
    name: "meta",
    placeholder: "key:value",
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": "search-meta-help",
  });
  const chips = current.meta.map((entry, i) =>
    h(
      "button",
      {
        type: "button",
        class: "search-chip",
        "aria-label": `Remove metadata filter ${entry}`,
        onClick: () => apply({ meta: current.meta.filter((_, j) => j !== i) }),
      },
      h("span", { class: "mono" }, entry),
      icon("x", "icon icon-sm"),
    ),
  );

  const form = h(
    "form",
    { class: "card search-form", role: "search", "aria-label": "Search and filters", "data-testid": "search-form" },
    h(
      "div",
      { class: "search-main" },
      h("label", { class: "field-label", for: "search-q" }, "Search text"),
      h(
        "div",
        { class: "search-q-row" },
        h("span", { class: "search-q-icon", "aria-hidden": "true" }, magnifier()),
        text,
        h("button", { type: "submit", class: "btn btn-primary" }, "Search"),
      ),
    ),
    h(
      "div",
      { class: "search-filters" },
      chooser("search-type", "Kind", TYPES, current.type, "type"),
      chooser("search-status", "Status", STATUSES, current.status, "status"),
      chooser("search-source", "Source", sourceOptions, current.source, "source"),
      h(
        "div",
        { class: "search-field" },
        h("span", { class: "field-label", id: "search-processor-label" }, "Processor and job state"),
        h(
          "div",
          { class: "search-pair", role: "group", "aria-labelledby": "search-processor-label" },
          h("label", { class: "sr-only", for: "search-processor" }, "Processor name (empty: any)"),
          processor,
          h("label", { class: "sr-only", for: "search-processor-state" }, "Job state"),
          state,
        ),
      ),
      h(
        "div",
        { class: "search-field" },
        h("label", { class: "field-label", for: "search-meta" }, "Metadata"),
        metaInput,
        h("p", { class: "field-help", id: "search-meta-help" }, "key:value, then Enter (e.g. fps:30)"),
      ),
    ),
    chips.length ? h("div", { class: "search-chips", "aria-label": "Metadata filters" }, chips) : null,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const extra = metaInput.value.trim();
    apply({
      q: text.value.trim(),
      processor_state: processorState(),
      meta: extra ? [...current.meta, extra] : current.meta,
    });
  });
  return form;
}

function splitProcessorState(value) {
  if (!value) return ["", ""];
  const cut = value.lastIndexOf(":");
  return cut < 0 ? ["", value] : [value.slice(0, cut), value.slice(cut + 1)];
}

function resultRow(row) {
  const kind = row.type ? DATASET_TYPES[row.type] : null;
  const visual = row.thumbnail
    ? h("img", { class: "search-thumb", src: row.thumbnail, alt: "", loading: "lazy", decoding: "async", width: 64, height: 48 })
    : h("span", { class: ["search-thumb", "search-thumb-none", `kind-${row.type || "folder"}`], "aria-hidden": "true" }, icon(kind ? kind.icon : row.type ? "file" : "folder", "icon icon-lg"));
  return h(
    "li",
    { class: "search-row", "data-id": row.id, "data-kind": row.kind },
    visual,
    h(
      "div",
      { class: "search-row-text" },
      h("a", { class: "search-row-name", href: row.link }, row.name),
      h("span", { class: "search-row-path mono" }, row.path),
    ),
    h(
      "div",
      { class: "search-row-facts" },
      row.type ? typeBadge(row.type) : h("span", { class: "badge" }, icon("folder", "icon icon-sm"), "Folder"),
      row.status ? pill(row.status) : null,
      row.state !== "present" ? pill(row.state) : null,
      row.source ? h("span", { class: "badge badge-source", title: "Source" }, row.source) : null,
    ),
  );
}

function noMatch(current, body, hrefFor, filtered) {
  const tips = [];
  if (current.q.split(/\s+/).length > 1) tips.push("every word must appear in the name or path: try fewer words");
  if (filtered) tips.push("a filter may be narrowing too much");
  if (current.q && current.q.length < 3) tips.push("one or two letters match the start of names only");
  return emptyState({
    iconName: "inbox",
    title: current.q ? `Nothing matches “${current.q}”` : "Nothing matches these filters",
    body: [
      body.offset > 0 ? h("p", null, `This page is past the last result (${fmtNumber(body.total)} in all).`) : null,
      tips.length ? h("p", null, `Tip: ${tips.join("; ")}.`) : null,
    ],
    actions: [
      filtered ? h("a", { class: "btn", href: hrefFor({ type: "", status: "", source: "", processor_state: "", meta: [], page: 1 }) }, "Clear the filters") : null,
      h("a", { class: "btn btn-ghost", href: "/ui/browse" }, icon("folder"), "Browse instead"),
    ],
  });
}
