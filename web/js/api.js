// api.js — the console's only way to the server: the public HTTP API with
// the user's key.
//
// The key lives in sessionStorage (this tab only, gone when it closes) and
// travels only in the Authorization header: never in a URL, a cookie or
// localStorage.  Errors arrive in the API's one shape and are thrown as
// ApiError with every member of the error object.

const KEY = "promod.console.key";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  set(key) {
    sessionStorage.setItem(KEY, key);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

export class ApiError extends Error {
  constructor(status, error, body) {
    const e = error || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || "http_" + status;
    this.field = e.field || null;
    this.detail = e; // current, allowed, errors, current_rev, ...
    this.body = body; // the whole reply (POST /api/v1/rules/validate's {"valid", "errors"})
  }
}

/** Listeners for a 401: the key is wrong or gone. */
const unauthorized = new Set();
export function onUnauthorized(fn) {
  unauthorized.add(fn);
}

/**
 * One API call.  `body` is sent as JSON; `ifMatch` becomes If-Match.
 * Resolves to {status, data, etag}; rejects with ApiError (or a network
 * TypeError).
 */
export async function api(method, path, { body, ifMatch } = {}) {
  const headers = { Accept: "application/json" };
  const key = session.key;
  if (key) headers.Authorization = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (ifMatch !== undefined && ifMatch !== null) headers["If-Match"] = `"${ifMatch}"`;
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
  });
  let data = null;
  const type = res.headers.get("Content-Type") || "";
  if (type.includes("json")) data = await res.json();
  else data = await res.text();
  if (!res.ok) {
    if (res.status === 401) for (const fn of unauthorized) fn();
    throw new ApiError(res.status, data && data.error, data);
  }
  return { status: res.status, data, etag: res.headers.get("ETag") };
}

export const get = (path) => api("GET", path).then((r) => r.data);
export const post = (path, body, opts) => api("POST", path, Object.assign({ body }, opts || {}));
export const put = (path, body, opts) => api("PUT", path, Object.assign({ body }, opts || {}));

/** GET /metrics (public Prometheus text). */
export async function metricsText() {
  const res = await fetch("/metrics", { cache: "no-store", credentials: "omit" });
  if (!res.ok) throw new ApiError(res.status, null);
  return res.text();
}

/** Path segment for an id (ids may hold ":" and "@"). */
export const seg = (id) => encodeURIComponent(id);

/** The error as one line for people: "409 illegal_transition: message". */
export function describe(err) {
  if (err instanceof ApiError) return `${err.status} ${err.code}: ${err.message}`;
  return String(err && err.message ? err.message : err);
}
