// Sign in by pasting an API token. The server answers with an http-only cookie; the token
// is neither kept in this page nor written to localStorage.

import { api } from "../api.js";
import { h, icon } from "../dom.js";

export function render({ onSignedIn, expired, signedOut, linkExpired }) {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    class: "input input-mono",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "mm_…",
    required: true,
    "aria-describedby": "token-help",
  });
  const reveal = h(
    "button",
    { type: "button", class: "input-addon", "aria-label": "Show token", "aria-pressed": "false" },
    "Show",
  );
  reveal.addEventListener("click", () => {
    const shown = input.type === "text";
    input.type = shown ? "password" : "text";
    reveal.textContent = shown ? "Show" : "Hide";
    reveal.setAttribute("aria-pressed", String(!shown));
  });
  const message = h("div", { class: "form-message", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block" }, icon("key"), h("span", null, "Sign in"));

  const note = linkExpired
    ? h("div", { class: "form-note" }, icon("clock"), "That sign-in link has expired or was already used. Paste a token, or restart the server for a new link.")
    : expired
    ? h("div", { class: "form-note" }, icon("clock"), "Your session has ended. Sign in again to continue.")
    : signedOut
      ? h("div", { class: "form-note form-note-ok" }, icon("check"), "You are signed out.")
      : null;

  const form = h(
    "form",
    { class: "signin-form", novalidate: true },
    note,
    h("label", { class: "field-label", for: "token" }, "API token"),
    h("div", { class: "input-group" }, input, reveal),
    h(
      "p",
      { class: "field-help", id: "token-help" },
      "Create one on the server with ",
      h("code", null, "mediamirror token create --role admin"),
      " (or ",
      h("code", null, "--role viewer"),
      " for read-only access).",
    ),
    message,
    submit,
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    message.hidden = true;
    if (!token) {
      showMessage("Paste your API token first.");
      input.focus();
      return;
    }
    submit.disabled = true;
    submit.classList.add("is-busy");
    try {
      const session = await api("session", { method: "POST", body: { token }, quiet401: true });
      input.value = "";
      onSignedIn(session);
    } catch (err) {
      showMessage(err.status === 401 ? "That token is unknown or has been revoked." : err.message);
      input.select();
    } finally {
      submit.disabled = false;
      submit.classList.remove("is-busy");
    }
  });

  function showMessage(text) {
    message.textContent = text;
    message.hidden = false;
  }

  queueMicrotask(() => input.focus());

  return h(
    "div",
    { class: "signin" },
    h(
      "div",
      { class: "signin-panel" },
      h("div", { class: "signin-brand" }, icon("logo", "logo logo-lg"), h("span", null, "mediamirror")),
      h("h1", { class: "signin-title" }, "Sign in"),
      h("p", { class: "signin-lead" }, "Browse, play and post-process the media mirrored from your buckets."),
      form,
      h(
        "p",
        { class: "signin-foot" },
        icon("lock", "icon icon-sm"),
        "The token is exchanged for a secure, http-only session cookie and is not stored by this page. ",
        "A one-time sign-in link is also printed by ",
        h("code", null, "mediamirror serve"),
        ".",
      ),
    ),
  );
}
