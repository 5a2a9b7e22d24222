// The HTTP API as the page calls it: the operator's credential from
// sessionStorage (never localStorage or a cookie), sent as `X-API-Key` or, for
// a JWT, `Authorization: Bearer`; the API's own message on a failure; and in
// read-only mode no request but GET ever leaves the page.

import { t } from "/admin/i18n.mjs";

const CREDENTIAL = "wsserver.admin.credential";
let readOnly = true; // until the hub says otherwise

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

export const setReadOnly = (value) => { readOnly = Boolean(value); };
export const isReadOnly = () => readOnly;
export const credential = () => sessionStorage.getItem(CREDENTIAL);
export const forget = () => sessionStorage.removeItem(CREDENTIAL);

/** A JWT (three base64url parts, a JSON header) goes as a Bearer token, anything else as an API key. */
export const isJwt = (value) => /^eyJ[\w-]*\.[\w-]+\.[\w-]*$/.test(value);

function headers(secret, withBody) {
  const out = isJwt(secret) ? { Authorization: "Bearer " + secret } : { "X-API-Key": secret };
  if (withBody) out["Content-Type"] = "application/json";
  return out;
}

/** One API call; resolves to the reply's `data`, rejects with an ApiError. */
export async function request(method, path, body, secret = credential()) {
  if (method !== "GET" && readOnly) throw new ApiError(0, t("read_only_refused"));
  const init = { method, headers: headers(secret ?? "", body !== undefined), cache: "no-store", credentials: "omit" };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, t("network_error"));
  }
  let reply = null;
  try {
    reply = await response.json();
  } catch {
    // not JSON: the status says it
  }
  if (!response.ok || !reply || reply.code !== 0) {
    const error = new ApiError(response.status, reply?.message || `${response.status} ${response.statusText}`, reply?.field);
    if (response.status === 401 && secret === credential()) window.dispatchEvent(new CustomEvent("admin:unauthorized"));
    throw error;
  }
  return reply.data;
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body ?? {});
export const del = (path) => request("DELETE", path);

/** `?a=1&b=2` of the non-empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? "?" + s : "";
}

export const seg = (value) => encodeURIComponent(String(value));

/** Checks `secret` against the API; kept for the tab only when it works. */
export async function login(secret) {
  await request("GET", "/api/stats", undefined, secret);
  sessionStorage.setItem(CREDENTIAL, secret);
}

/** The hub's mode and default language (`/admin/settings.json`, no credential). */
export async function settings() {
  const response = await fetch("/admin/settings.json", { cache: "no-store", credentials: "omit" });
  const reply = await response.json().catch(() => null);
  if (!response.ok || !reply?.data) throw new ApiError(response.status, reply?.message || `${response.status} ${response.statusText}`);
  return reply.data;
}
