// modules.js — the console's pages.  A page is an ES module under pages/
// exporting `render(view, ctx, ...params)` (returning an optional cleanup
// function); adding one is a line here.  `role` is the least API role the
// page needs (decide < checkout < marketer < admin, as the API's); pages above the
// key's role are left out of the navigation and refused by the router.
// `route` matches the part of the location hash after "#/".

export const ROLES = { decide: 1, checkout: 2, marketer: 3, admin: 4 }; // as config.h's

export const pages = [
  { id: "dashboard", title: "Dashboard", role: "marketer", nav: true,
    route: /^(?:dashboard)?$/, load: () => import("./pages/dashboard.js") },
  { id: "campaigns", title: "Campaigns", role: "marketer", nav: true,
    route: /^campaigns$/, load: () => import("./pages/campaigns.js") },
  { id: "campaign", title: "Campaign", role: "marketer", nav: false, parent: "campaigns",
    route: /^campaigns\/([^/]+)(?:\/(metrics|script|versions|audit))?$/,
    load: () => import("./pages/campaign.js") },
  { id: "experiments", title: "Experiments", role: "marketer", nav: true,
    route: /^experiments$/, load: () => import("./pages/experiments.js") },
  { id: "experiment", title: "Experiment", role: "marketer", nav: false, parent: "experiments",
    route: /^experiments\/([^/]+)$/, load: () => import("./pages/experiment.js") },
  { id: "segments", title: "Segments", role: "marketer", nav: true,
    route: /^segments(?:\/([^/]+))?$/, load: () => import("./pages/segments.js") },
  { id: "outbox", title: "Outbox", role: "marketer", nav: true,
    route: /^outbox$/, load: () => import("./pages/outbox.js") },
  { id: "rules", title: "Rules", role: "marketer", nav: true,
    route: /^rules$/, load: () => import("./pages/rules.js") },
];

/** May a key of role `have` use something that needs `need`? */
export function allows(have, need) {
  return (ROLES[have] || 0) >= (ROLES[need] || 99);
}
