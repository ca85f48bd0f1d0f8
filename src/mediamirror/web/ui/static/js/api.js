// The REST API v1 client. The session lives in an http-only cookie the server sets; this
// code never sees or stores the token after sign-in.

export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

let onUnauthorized = null;

/** Called when any request (but the session check) answers 401. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** JSON in, JSON out; non-2xx answers become an ApiError carrying the server's message. */
export async function api(path, { method = "GET", body, signal, quiet401 = false } = {}) {
  const url = path.startsWith("/") ? path : `${API}/${path}`;
  const init = { method, signal, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "The server cannot be reached. Is mediamirror still running?");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const err = new ApiError(response.status, errorMessage(response, data), data);
    if (response.status === 401 && !quiet401 && onUnauthorized) onUnauthorized(err);
    throw err;
  }
  return data;
}

function errorMessage(response, data) {
  const message = data && (data.error ?? data.detail ?? data.message);
  if (typeof message === "string" && message) return capitalize(message);
  if (message) return JSON.stringify(message);
  return `${response.status} ${response.statusText || "error"}`.trim();
}

function capitalize(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export const isAbort = (err) => err && err.name === "AbortError";
