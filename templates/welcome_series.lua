-- Welcome series: a first message after sign-up.
-- A campaign template (docs/authoring.md): GET /api/v1/templates lists its
-- parameters; POST /api/v1/campaigns {"template": "welcome_series", "params": {...}}
-- makes a draft campaign from it.  As it is, the file is a valid campaign
-- with every parameter at its default (promod check / promod test templates/).
local TEMPLATE = {
  description = "A welcome message a short delay after the signup event, for customers who have not bought yet.",
  params = {
    { name = "id", type = "string", default = "welcome-series", description = "campaign id" },
    { name = "name", type = "string", default = "Welcome series", description = "campaign name" },
    { name = "channels", type = "strings", default = { "email" }, description = "channels the welcome is sent on (outbound)" },
    { name = "delay", type = "string", default = "10m", description = "wait after the signup event" },
    { name = "headline", type = "string", default = "Welcome aboard", description = "the message's subject" },
    { name = "priority", type = "number", default = 40, description = "rank among campaigns" },
  },
}
local P = {} -- @params
for _, d in ipairs(TEMPLATE.params) do
  if P[d.name] == nil then P[d.name] = d.default end
end

return {
  id = P.id,
  name = P.name,
  channels = P.channels,
  priority = P.priority,
  trigger = { event = "signup", delay = P.delay, cancel_on = "purchase" },
  caps = { customer = { { 1, "lifetime" } } },
  variants = {
    { id = "welcome", weight = 1, content = {
        subject = P.headline .. ", {{first_name|friend}}",
        body = "Thanks for joining. Here is what you can do next.",
    } },
  },
  eligible = function(p, ctx)
    if p.stats and (p.stats.conversion or 0) > 0 then
      return false, "already a customer"
    end
    return true
  end,
}
