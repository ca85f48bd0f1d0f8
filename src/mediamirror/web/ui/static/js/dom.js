// Building DOM without innerHTML: every string becomes a text node or an attribute value,
// so text from the API can never turn into markup.

const SVG_NS = "http://www.w3.org/2000/svg";

/** Only same-origin paths, http(s), blob: and data:image URLs reach an href or a src. */
export function safeUrl(value) {
  const url = String(value ?? "");
  if (/^\/(?!\/)/.test(url) || /^(https?:|blob:)/i.test(url) || /^data:image\//i.test(url)) {
    return url;
  }
  if (url.startsWith("?") || url.startsWith("#")) return url;
  return "about:blank";
}

const URL_ATTRS = new Set(["href", "src", "poster", "action"]);

/** h("a", {href, class, onClick}, "text", child, [more]) */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

export function setProps(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "style" && typeof value === "object") {
      Object.assign(el.style, value);
    } else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (URL_ATTRS.has(key)) {
      el.setAttribute(key, safeUrl(value));
    } else if (key === "value" || key === "checked" || key === "selected") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

// Icons: 24×24 stroke drawings, built as SVG elements.
const ICONS = {
  logo: [],
  folder: ["M3 6.5A1.5 1.5 0 0 1 4.5 5h4.3l2 2h8.7A1.5 1.5 0 0 1 21 8.5v9a1.5 1.5 0 0 1-1.5 1.5h-15A1.5 1.5 0 0 1 3 17.5z"],
  video: [
    "M3 7.5A1.5 1.5 0 0 1 4.5 6h9A1.5 1.5 0 0 1 15 7.5v9a1.5 1.5 0 0 1-1.5 1.5h-9A1.5 1.5 0 0 1 3 16.5z",
    "M15 10.5l6-3.5v10l-6-3.5",
  ],
  frames: [
    "M7 3.5h11.5A2.5 2.5 0 0 1 21 6v11.5",
    "M3 9.5A2.5 2.5 0 0 1 5.5 7h9A2.5 2.5 0 0 1 17 9.5v9a2.5 2.5 0 0 1-2.5 2.5h-9A2.5 2.5 0 0 1 3 18.5z",
    "M3 17l4-3.5 3 2.5 2.5-2 4.5 4",
  ],
  image: [
    "M3 5.5A2.5 2.5 0 0 1 5.5 3h13A2.5 2.5 0 0 1 21 5.5v13a2.5 2.5 0 0 1-2.5 2.5h-13A2.5 2.5 0 0 1 3 18.5z",
    "M3 16l5-5 4.5 4.5L15 13l6 6",
    ["circle", { cx: 15.5, cy: 8.5, r: 1.5 }],
  ],
  file: ["M6.5 3H14l5 5v11.5a1.5 1.5 0 0 1-1.5 1.5h-11A1.5 1.5 0 0 1 5 19.5v-15A1.5 1.5 0 0 1 6.5 3z", "M14 3v5h5"],
  database: [
    ["ellipse", { cx: 12, cy: 6, rx: 8, ry: 3 }],
    "M4 6v6c0 1.7 3.6 3 8 3s8-1.3 8-3V6",
    "M4 12v6c0 1.7 3.6 3 8 3s8-1.3 8-3v-6",
  ],
  activity: ["M3 12h4l3-8 4 16 3-8h4"],
  bell: ["M6 9a6 6 0 1 1 12 0c0 5 2 6.5 2 6.5H4S6 14 6 9z", "M10 19.5a2 2 0 0 0 4 0"],
  refresh: ["M20 11a8 8 0 0 0-14.6-4.5L4 8", "M4 3v5h5", "M4 13a8 8 0 0 0 14.6 4.5L20 16", "M20 21v-5h-5"],
  play: ["M7 4.8v14.4a.8.8 0 0 0 1.2.7l11.5-7.2a.8.8 0 0 0 0-1.4L8.2 4.1a.8.8 0 0 0-1.2.7z"],
  pause: ["M8 5v14", "M16 5v14"],
  prev: ["M15 6l-6 6 6 6"],
  next: ["M9 6l6 6-6 6"],
  chevron: ["M9 6l6 6-6 6"],
  zoomIn: [["circle", { cx: 11, cy: 11, r: 7 }], "M20 20l-3.5-3.5", "M11 8v6", "M8 11h6"],
  zoomOut: [["circle", { cx: 11, cy: 11, r: 7 }], "M20 20l-3.5-3.5", "M8 11h6"],
  fit: ["M4 9V5a1 1 0 0 1 1-1h4", "M15 4h4a1 1 0 0 1 1 1v4", "M20 15v4a1 1 0 0 1-1 1h-4", "M9 20H5a1 1 0 0 1-1-1v-4"],
  fullscreen: ["M15 3h6v6", "M9 21H3v-6", "M21 3l-7 7", "M3 21l7-7"],
  signOut: ["M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4", "M16 17l5-5-5-5", "M21 12H9"],
  alert: [["circle", { cx: 12, cy: 12, r: 9 }], "M12 7.5v5", "M12 16.2v.1"],
  check: ["M5 12.5l4.5 4.5L19 7"],
  x: ["M6 6l12 12", "M18 6L6 18"],
  clock: [["circle", { cx: 12, cy: 12, r: 9 }], "M12 7v5l3 2"],
  download: ["M12 4v11", "M7 10l5 5 5-5", "M5 20h14"],
  terminal: ["M4.5 4h15A1.5 1.5 0 0 1 21 5.5v13a1.5 1.5 0 0 1-1.5 1.5h-15A1.5 1.5 0 0 1 3 18.5v-13A1.5 1.5 0 0 1 4.5 4z", "M7 9l3 3-3 3", "M12.5 15H17"],
  retry: ["M3 12a9 9 0 1 0 2.6-6.4L3 8", "M3 3v5h5"],
  cancel: [["circle", { cx: 12, cy: 12, r: 9 }], "M5.7 5.7l12.6 12.6"],
  zap: ["M13 2L4 14h7l-1 8 9-12h-7z"],
  lock: ["M6.5 11h11a1.5 1.5 0 0 1 1.5 1.5v7a1.5 1.5 0 0 1-1.5 1.5h-11A1.5 1.5 0 0 1 5 19.5v-7A1.5 1.5 0 0 1 6.5 11z", "M8 11V7a4 4 0 0 1 8 0v4"],
  key: [["circle", { cx: 8, cy: 15, r: 4 }], "M10.8 12.2L20 3", "M17 6l3 3", "M14.5 8.5l2 2"],
  inbox: ["M3 13h5l1.5 3h5l1.5-3h5", "M5.5 5h13L21 13v5.5a1.5 1.5 0 0 1-1.5 1.5h-15A1.5 1.5 0 0 1 3 18.5V13z"],
  external: ["M14 4h6v6", "M20 4l-9 9", "M18 14v5a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1V7a1 1 0 0 1 1-1h5"],
  menu: ["M4 6h16", "M4 12h16", "M4 18h16"],
};

export function icon(name, className = "icon") {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", className);
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  if (name === "logo") return logo(svg);
  svg.setAttribute("fill", "none");
  svg.setAttribute("stroke", "currentColor");
  svg.setAttribute("stroke-width", "1.8");
  svg.setAttribute("stroke-linecap", "round");
  svg.setAttribute("stroke-linejoin", "round");
  for (const part of ICONS[name] || ICONS.file) {
    const [tag, attrs] = typeof part === "string" ? ["path", { d: part }] : part;
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    svg.append(el);
  }
  return svg;
}

/** The mark: a play shape and its reflection. */
function logo(svg) {
  svg.setAttribute("viewBox", "0 0 32 32");
  const parts = [
    ["rect", { x: 0, y: 0, width: 32, height: 32, rx: 8, class: "logo-bg" }],
    ["path", { d: "M9 9.5v13l7.5-6.5z", fill: "#fff" }],
    ["path", { d: "M23 9.5v13l-7.5-6.5z", fill: "#fff", "fill-opacity": ".5" }],
  ];
  for (const [tag, attrs] of parts) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    svg.append(el);
  }
  return svg;
}

// Formatting ------------------------------------------------------------------------------

const NUMBER = new Intl.NumberFormat();
const DATE = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function fmtNumber(n) {
  return n === null || n === undefined ? "—" : NUMBER.format(n);
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function fmtSeconds(s) {
  if (s === null || s === undefined) return "—";
  if (s < 1) return `${Math.max(0.01, s).toFixed(2)} s`;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtDate(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : DATE.format(d);
}

export function fmtRelative(iso, now = Date.now()) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const seconds = Math.round((d.getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  if (abs < 3600) return RELATIVE.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return RELATIVE.format(Math.round(seconds / 3600), "hour");
  if (abs < 86400 * 30) return RELATIVE.format(Math.round(seconds / 86400), "day");
  return DATE.format(d);
}

/** A <time> showing "3 minutes ago", the full date on hover. */
export function timeEl(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: fmtDate(iso) }, fmtRelative(iso));
}

export function plural(n, one, many = `${one}s`) {
  return `${fmtNumber(n)} ${n === 1 ? one : many}`;
}
