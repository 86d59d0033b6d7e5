// Every call to the EMS API from the page: JSON in and out, the session cookie sent by the browser, the
// CSRF token on every change, and every refusal turned into an Error whose message the page shows.
let csrf = null;

export function setCsrf(token) { csrf = token; }

export class ApiError extends Error {
  constructor(status, message, problems, fields) {
    super(message); this.status = status; this.problems = problems || []; this.fields = fields || [];
  }
}

async function send(method, path, body, contentType) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = contentType;
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  let resp;
  try {
    resp = await fetch(path, { method, headers, body, credentials: "same-origin" });
  } catch (e) {
    throw new ApiError(0, `the EMS does not answer (${e.message})`);
  }
  let data = null;
  const text = await resp.text();
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    const msg = (data && data.error) || `${resp.status} ${resp.statusText}`;
    throw new ApiError(resp.status, msg, data && data.problems, data && data.fields);
  }
  return data;
}

export const api = (method, path, body) =>
  send(method, path, body === undefined ? undefined : JSON.stringify(body), "application/json");
// a file as the request body (an update bundle), with the same CSRF token and error handling
export const upload = (path, file) => send("POST", path, file, "application/octet-stream");
export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body === undefined ? {} : body);
