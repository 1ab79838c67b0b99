// app.js — boot, sign-in, navigation and the hash router.
//
// Sign-in asks for an API key, checks it with GET /api/v1/whoami and keeps
// it in sessionStorage for this tab.  The role whoami reports decides which
// pages and actions are shown (the server enforces the same roles; the
// console only avoids offering what would be refused).  Routes live in the
// location hash ("#/campaigns/spring-sale/script"), so the server serves
// one index.html and no key or data ever goes into a URL it sees.

import { api, session, onUnauthorized, describe } from "./api.js";
import { h, put, notice } from "./dom.js";
import { pages, allows } from "./modules.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
const who = document.getElementById("who");

const state = { me: null, cleanup: null, seq: 0 };

function ctx() {
  return {
    me: state.me,
    can: (role) => allows(state.me && state.me.role, role),
    go: (hash) => {
      location.hash = hash;
    },
  };
}

function renderNav(current) {
  put(nav, pages.filter((p) => p.nav && allows(state.me.role, p.role)).map((p) =>
    h("a", { href: "#/" + p.id, class: current && (current.id === p.id || current.parent === p.id) ? "active" : null,
      dataset: { page: p.id } }, p.title)));
  put(who,
    h("span", { class: "who-id", dataset: { role: state.me.role } },
      state.me.key_id ? `${state.me.key_id} · ${state.me.role}` : `no API keys · ${state.me.role}`),
    state.me.auth === "api_keys"
      ? h("button", { type: "button", class: "link", on: { click: signOut } }, "Sign out")
      : null);
}

function signOut() {
  session.clear();
  state.me = null;
  showSignIn();
}

function stopPage() {
  if (typeof state.cleanup === "function") {
    try {
      state.cleanup();
    } catch (e) {
      console.warn("cleanup failed", e);
    }
  }
  state.cleanup = null;
}

function showSignIn(message) {
  stopPage();
  put(nav);
  put(who);
  const input = h("input", { type: "password", id: "api-key", autocomplete: "off", spellcheck: "false",
    placeholder: "API key", "aria-label": "API key", required: true });
  const msg = h("div", { class: "signin-msg" }, message ? notice("error", message) : null);
  // no name on the input and form-action 'none' in the CSP: the key cannot
  // be submitted into a URL even if this handler never ran
  const form = h("form", { class: "signin", on: { submit: async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    session.set(key);
    input.value = "";
    await boot(true);
  } } },
  h("h1", null, "promod console"),
  h("p", null, "Sign in with an API key of the marketer or admin role. It is kept for this tab only."),
  input,
  h("button", { type: "submit", class: "primary" }, "Sign in"),
  msg);
  put(view, form);
  input.focus();
}

async function route() {
  if (!state.me) return;
  let hash = location.hash.replace(/^#\/?/, "");
  try {
    hash = decodeURIComponent(hash);
  } catch (e) {
    // a malformed escape: match the hash as it is
  }
  const seq = ++state.seq;
  let page = null;
  let params = [];
  for (const p of pages) {
    const m = p.route.exec(hash);
    if (m) {
      page = p;
      params = m.slice(1);
      break;
    }
  }
  stopPage();
  renderNav(page);
  if (!page) {
    put(view, notice("error", `No page at #/${hash}.`), h("p", null, h("a", { href: "#/dashboard" }, "Dashboard")));
    return;
  }
  if (!allows(state.me.role, page.role)) {
    put(view, notice("error", `${page.title} needs the ${page.role} role; this key is ${state.me.role}.`));
    return;
  }
  document.title = `${page.title} · promod console`;
  put(view, h("p", { class: "muted" }, "Loading…"));
  try {
    const mod = await page.load();
    if (seq !== state.seq) return; // navigated away meanwhile
    view.replaceChildren();
    view.dataset.page = page.id;
    const cleanup = await mod.render(view, ctx(), ...params);
    if (seq !== state.seq) {
      if (typeof cleanup === "function") cleanup();
      return;
    }
    state.cleanup = cleanup;
  } catch (e) {
    if (seq === state.seq) put(view, notice("error", "This page could not be shown: " + describe(e)));
    console.warn(e);
  }
}

async function boot(fromSignIn) {
  try {
    // public: without a key it answers {"role": null} rather than a 401
    const r = await api("GET", "/api/v1/whoami");
    state.me = r.data;
  } catch (e) {
    state.me = null;
    if (e.status === 401) {
      session.clear();
      showSignIn("That key was not accepted.");
    } else {
      put(view, notice("error", "The server could not be reached: " + describe(e)));
    }
    return;
  }
  if (!state.me.role) {
    state.me = null;
    showSignIn(fromSignIn ? "That key was not accepted." : null);
    return;
  }
  if (!allows(state.me.role, "marketer")) {
    session.clear();
    const role = state.me.role;
    state.me = null;
    showSignIn(`This key has the ${role} role; the console needs a marketer or admin key ` +
      "(decide and checkout keys are for sites and checkouts, not for people).");
    return;
  }
  if (!location.hash || location.hash === "#" || location.hash === "#/") {
    history.replaceState(null, "", "#/dashboard");
  }
  await route();
}

onUnauthorized(() => {
  if (state.me && state.me.auth === "api_keys") {
    session.clear();
    state.me = null;
    showSignIn("The key is no longer accepted; sign in again.");
  }
});
window.addEventListener("hashchange", route);
boot(false);
