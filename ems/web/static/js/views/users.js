// Users: the manual's roles (000_… §3.2). An installer manages end users and itself; the admin everyone.
// The server enforces the rules; a refusal is shown as its sentence.
import { html, useState, usePoll, ErrorBox } from "../ui.js";
import { get, post, api } from "../api.js";

const ROLES = ["admin", "installer", "operator", "end_user"];

export function Users({ session }) {
  const [n, setN] = useState(0);
  const [rows, err] = usePoll(() => get("/api/users"), 0, [n]);
  const [r, setR] = useState(null);
  const run = async (what, fn) => { try { await fn(); setR({ text: what }); setN(n + 1); } catch (e) { setR({ error: e }); } };
  const create = (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    run(`user ${f.get("username")} created`, () => post("/api/users", { username: f.get("username"), role: f.get("role"), password: f.get("password") }))
      .then(() => ev.target.reset());
  };
  return html`<h1>Users</h1><${ErrorBox} error=${err} />
    <section class="panel scroll">${rows ? html`<table id="users"><thead><tr><th>Name</th><th>Role</th><th>Created</th><th></th></tr></thead><tbody>
      ${rows.map((u) => html`<tr data-user=${u.name}><td>${u.name}</td>
        <td><select onChange=${(e) => run(`${u.name} is now ${e.target.value}`, () => api("PATCH", `/api/users/${u.name}`, { role: e.target.value }))}>
          ${ROLES.map((x) => html`<option selected=${x === u.role}>${x}</option>`)}</select></td>
        <td>${new Date(u.created * 1000).toLocaleString()}</td>
        <td>${u.name !== session.user ? html`<button class="secondary" onClick=${() => confirm(`Delete ${u.name}?`) &&
          run(`${u.name} deleted`, () => api("DELETE", `/api/users/${u.name}`))}>delete</button>` : null}</td></tr>`)}
      </tbody></table>` : null}</section>
    <section class="panel"><h2>New user</h2>
      <form class="inline" onSubmit=${create} id="new-user">
        <label>Name<input name="username" required maxlength="32" /></label>
        <label>Role<select name="role">${ROLES.map((x) => html`<option selected=${x === "end_user"}>${x}</option>`)}</select></label>
        <label>Password<input name="password" type="password" autocomplete="new-password" required /></label>
        <button type="submit">Create</button></form>
      ${r ? (r.error ? html`<${ErrorBox} error=${r.error} />` : html`<p class="notice" role="status">${r.text}</p>`) : null}</section>`;
}
