// The single-page shell: session, routing under /ui/, the sidebar, banners and toasts.

import { api, isAbort, setUnauthorizedHandler } from "./api.js";
import { clear, h, icon } from "./dom.js";
import { emptyState, errorState, loading, pageHeader } from "./components.js";
import * as browse from "./pages/browse.js";
import * as dataset from "./pages/dataset.js";
import * as events from "./pages/events.js";
import * as jobs from "./pages/jobs.js";
import * as notifications from "./pages/notifications.js";
import * as overview from "./pages/overview.js";
import * as search from "./pages/search.js";
import * as signin from "./pages/signin.js";
import * as sourceDetail from "./pages/source_detail.js";
import * as sourceForm from "./pages/source_form.js";
import * as sources from "./pages/sources.js";
import { mountSearchBox } from "./searchbox.js";

const HOME = "/ui/overview";

const ROUTES = [
  { re: /^\/ui\/overview\/?$/, page: overview, nav: "overview" },
  { re: /^\/ui\/search\/?$/, page: search, nav: "search" },
  { re: /^\/ui\/sources\/new\/?$/, page: sourceForm, nav: "sources", params: () => ({ name: null }) },
  { re: /^\/ui\/sources\/([^/]+)\/edit\/?$/, page: sourceForm, nav: "sources", params: (m) => ({ name: decodeURIComponent(m[1]) }) },
  { re: /^\/ui\/sources\/([^/]+)\/?$/, page: sourceDetail, nav: "sources", params: (m) => ({ name: decodeURIComponent(m[1]) }) },
  { re: /^\/ui\/browse(?:\/(\d+))?\/?$/, page: browse, nav: "browse", params: (m) => ({ id: m[1] ? Number(m[1]) : null }) },
  { re: /^\/ui\/datasets\/(\d+)\/?$/, page: dataset, nav: "browse", params: (m) => ({ id: Number(m[1]) }) },
  { re: /^\/ui\/sources\/?$/, page: sources, nav: "sources" },
  { re: /^\/ui\/jobs\/?$/, page: jobs, nav: "jobs" },
  { re: /^\/ui\/events\/?$/, page: events, nav: "events" },
  { re: /^\/ui\/notifications\/?$/, page: notifications, nav: "notifications" },
];

const NAV = [
  { key: "overview", href: "/ui/overview", label: "Overview", icon: "activity" },
  { key: "browse", href: "/ui/browse", label: "Browse", icon: "folder" },
  { key: "sources", href: "/ui/sources", label: "Sources", icon: "database" },
  { key: "jobs", href: "/ui/jobs", label: "Jobs", icon: "activity" },
  { key: "events", href: "/ui/events", label: "Events", icon: "bell" },
  { key: "notifications", href: "/ui/notifications", label: "Notifications", icon: "zap" },
];

const state = {
  session: undefined, // undefined: not asked yet; null: signed out; {name, role}
  controller: null,
  shell: null,
};

const root = document.getElementById("app");

// -- navigation ------------------------------------------------------------------------------

export function navigate(url, { replace = false } = {}) {
  const target = new URL(url, location.origin);
  if (target.origin !== location.origin) {
    location.assign(target.href);
    return;
  }
  const same = target.pathname + target.search === location.pathname + location.search;
  if (replace || same) history.replaceState(null, "", target.pathname + target.search + target.hash);
  else history.pushState(null, "", target.pathname + target.search + target.hash);
  render();
}

document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest("a[href]");
  if (!link || link.target || link.hasAttribute("download")) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/ui/")) return;
  event.preventDefault();
  navigate(url.pathname + url.search + url.hash);
});

window.addEventListener("popstate", () => render());

setUnauthorizedHandler(() => {
  if (state.session === null) return;
  state.session = null;
  const next = location.pathname + location.search;
  navigate(`/ui/sign-in?next=${encodeURIComponent(next)}&expired=1`, { replace: true });
});

// -- rendering --------------------------------------------------------------------------------

async function render() {
  state.controller?.abort();
  const controller = new AbortController();
  state.controller = controller;
  const path = location.pathname;

  if (state.session === undefined) {
    try {
      state.session = await api("session", { quiet401: true, signal: controller.signal });
    } catch (err) {
      if (isAbort(err)) return;
      state.session = null;
      if (err.status !== 401) return renderFatal(err);
    }
    if (controller.signal.aborted) return;
  }

  if (path === "/" || path === "/ui" || path === "/ui/") return navigate(HOME, { replace: true });

  if (path.replace(/\/$/, "") === "/ui/sign-in") {
    if (state.session) return navigate(safeNext(), { replace: true });
    return renderSignIn(controller);
  }
  if (!state.session) {
    const next = encodeURIComponent(path + location.search);
    return navigate(`/ui/sign-in?next=${next}`, { replace: true });
  }

  const shell = ensureShell();
  const route = ROUTES.find((r) => r.re.test(path));
  setActiveNav(route ? route.nav : null);
  clearBanner();
  const page = shell.page;
  clear(page);
  page.append(loading());
  window.scrollTo(0, 0);

  if (!route) {
    clear(page);
    // A page of its own: a heading, and a way on for keyboard and screen-reader users.
    page.append(
      pageHeader({ title: "Page not found" }),
      emptyState({
        iconName: "alert",
        title: "Not found",
        body: h("p", null, `There is no page at ${path}.`),
        actions: h("a", { class: "btn", href: HOME, "data-action": "home" }, icon("activity"), "Go to the overview"),
      }),
    );
    document.title = "Not found · mediamirror";
    return;
  }
  const ctx = makeContext(controller, route, page);
  try {
    await route.page.render(page, ctx);
  } catch (err) {
    if (isAbort(err) || controller.signal.aborted) return;
    clear(page);
    page.append(errorState(err, () => render()));
  }
}

function safeNext() {
  const next = new URLSearchParams(location.search).get("next") || HOME;
  return next.startsWith("/ui/") && !next.startsWith("/ui/sign-in") ? next : HOME;
}

function makeContext(controller, route, page) {
  const signal = controller.signal;
  const match = route.re.exec(location.pathname);
  return {
    signal,
    page,
    params: route.params ? route.params(match) : {},
    query: new URLSearchParams(location.search),
    session: state.session,
    isAdmin: state.session?.role === "admin",
    navigate,
    banner: { error: (m) => showBanner(m, "error"), info: (m) => showBanner(m, "info"), clear: clearBanner },
    toast,
    setTitle: (title) => {
      document.title = `${title} · mediamirror`;
    },
    api: (path, options = {}) => api(path, { signal, ...options }),
    /** Run fn now and again after the delay it returns (ms); stop on navigation. */
    loop(fn) {
      let timer = null;
      let running = false;
      let again = false; // kicked while a fetch was in flight: its answer may be stale
      const tick = async () => {
        timer = null;
        if (signal.aborted) return;
        if (running) {
          again = true;
          return;
        }
        running = true;
        again = false;
        let delay = null;
        try {
          delay = await fn();
        } catch (err) {
          if (!isAbort(err) && !signal.aborted) showBanner(err.message || String(err), "error");
          delay = 5000;
        } finally {
          running = false;
        }
        if (signal.aborted) return;
        if (again) {
          timer = setTimeout(tick, 0);
        } else if (typeof delay === "number") {
          timer = setTimeout(tick, delay);
        }
      };
      signal.addEventListener("abort", () => timer && clearTimeout(timer));
      const handle = {
        kick() {
          if (timer) clearTimeout(timer);
          timer = null;
          tick();
        },
        start: tick,
      };
      return handle;
    },
  };
}

function ensureShell() {
  if (state.shell && root.contains(state.shell.el)) {
    updateWho();
    return state.shell;
  }
  clear(root);
  root.className = "";
  root.removeAttribute("aria-busy");
  const navLinks = NAV.map((item) =>
    h(
      "a",
      // aria-label: on a phone only the icon shows (the label is display: none).
      { class: "nav-link", href: item.href, "data-nav": item.key, "aria-label": item.label },
      icon(item.icon),
      h("span", null, item.label),
      item.key === "jobs" ? h("span", { class: "nav-count", hidden: true, "data-jobs-active": "" }) : null,
    ),
  );
  const who = h("div", { class: "who" });
  const signOut = h(
    "button",
    { type: "button", class: "btn btn-ghost btn-sm sign-out", "aria-label": "Sign out", onClick: doSignOut },
    icon("signOut"),
    h("span", null, "Sign out"),
  );
  const sidebar = h(
    "aside",
    { class: "sidebar" },
    h("a", { class: "brand", href: HOME, "aria-label": "mediamirror home" }, icon("logo", "logo"), h("span", null, "mediamirror")),
    h("nav", { class: "nav", "aria-label": "Main" }, navLinks),
    h("div", { class: "sidebar-foot" }, who, signOut),
  );
  const banner = h("div", { class: "banner-slot", "aria-live": "polite" });
  const page = h("div", { class: "page", id: "page", tabindex: "-1" });
  const searchSlot = h("div", { class: "search-slot" });
  const main = h("main", { class: "main", id: "main" }, searchSlot, banner, page);
  // The first Tab stop: past the navigation and the search box, to the page itself.
  const skip = h("a", { class: "skip-link", href: "#page" }, "Skip to content");
  skip.addEventListener("click", (event) => {
    event.preventDefault();
    page.focus();
  });
  const el = h("div", { class: "shell" }, skip, sidebar, main);
  root.append(el, toastRegion());
  state.shell = { el, page, banner, who };
  mountSearchBox(searchSlot, { navigate });
  updateWho();
  watchJobCount();
  return state.shell;
}

function updateWho() {
  const { who } = state.shell;
  clear(who);
  const s = state.session || {};
  const role = s.role === "admin" ? "Admin" : "Viewer";
  who.append(
    h("span", { class: "avatar", "aria-hidden": "true" }, (s.name || "?").trim().charAt(0).toUpperCase()),
    h("span", { class: "who-text" }, h("span", { class: "who-name", title: s.name }, s.name || "signed in"), h("span", { class: ["who-role", `role-${s.role}`] }, role)),
  );
}

function setActiveNav(key) {
  for (const link of state.shell.el.querySelectorAll(".nav-link")) {
    const active = link.dataset.nav === key;
    link.classList.toggle("is-active", active);
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

let jobTimer = null;

/** The sidebar's count of queued and running jobs, from the health endpoint. */
function watchJobCount() {
  if (jobTimer) return;
  const tick = async () => {
    try {
      const health = await api("health");
      const counts = health.jobs || {};
      const active = (counts.queued || 0) + (counts.running || 0);
      const badge = state.shell?.el.querySelector("[data-jobs-active]");
      if (badge) {
        badge.hidden = active === 0;
        badge.textContent = String(active);
        badge.title = `${active} job(s) queued or running`;
      }
    } catch {
      // the pages show connection problems; the badge just keeps its last value
    }
    jobTimer = setTimeout(tick, document.hidden ? 15000 : 5000);
  };
  tick();
}

async function doSignOut() {
  try {
    await api("session", { method: "DELETE", quiet401: true });
  } catch {
    // signing out of an expired session is still signing out
  }
  state.session = null;
  navigate("/ui/sign-in?signed_out=1", { replace: true });
}

function renderSignIn(controller) {
  state.shell = null;
  clear(root);
  root.className = "";
  root.removeAttribute("aria-busy");
  document.title = "Sign in · mediamirror";
  const query = new URLSearchParams(location.search);
  root.append(
    signin.render({
      signal: controller.signal,
      expired: query.has("expired"),
      signedOut: query.has("signed_out"),
      linkExpired: query.has("link_expired"),
      onSignedIn(session) {
        state.session = session;
        navigate(safeNext(), { replace: true });
      },
    }),
  );
}

function renderFatal(err) {
  clear(root);
  root.append(h("div", { class: "fatal" }, errorState(err, () => location.reload())));
}

// -- banner and toasts --------------------------------------------------------------------------

function showBanner(message, kind = "error") {
  if (!state.shell) return;
  const slot = state.shell.banner;
  clear(slot);
  slot.append(
    h(
      "div",
      { class: ["banner", `banner-${kind}`], role: kind === "error" ? "alert" : "status" },
      icon(kind === "error" ? "alert" : "check"),
      h("p", { class: "banner-text" }, message),
      h(
        "button",
        { type: "button", class: "icon-btn", "aria-label": "Dismiss", onClick: clearBanner },
        icon("x"),
      ),
    ),
  );
}

function clearBanner() {
  if (state.shell) clear(state.shell.banner);
}

let toastEl = null;

function toastRegion() {
  toastEl = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
  return toastEl;
}

export function toast(message, kind = "ok") {
  if (!toastEl) return;
  const item = h("div", { class: ["toast", `toast-${kind}`] }, icon(kind === "ok" ? "check" : "alert"), h("span", null, message));
  toastEl.append(item);
  setTimeout(() => item.classList.add("is-leaving"), 3800);
  setTimeout(() => item.remove(), 4200);
}

render();
