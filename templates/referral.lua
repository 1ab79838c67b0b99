-- Referral: invite customers who have bought to refer a friend.
-- A campaign template (docs/authoring.md): GET /api/v1/templates lists its
-- parameters; POST /api/v1/campaigns {"template": "referral", "params": {...}}
-- makes a draft campaign from it.  As it is, the file is a valid campaign
-- with every parameter at its default (promod check / promod test templates/).
local TEMPLATE = {
  description = "A banner for customers with at least min_orders purchases (p.orders) asking them to refer a friend for a reward.",
  params = {
    { name = "id", type = "string", default = "referral", description = "campaign id" },
    { name = "name", type = "string", default = "Refer a friend", description = "campaign name" },
    { name = "channels", type = "strings", default = { "web", "app" }, description = "channels the banner is shown on" },
    { name = "min_orders", type = "integer", default = 2, description = "orders (p.orders) a customer needs" },
    { name = "reward", type = "string", default = "10 EUR", description = "what both friends get" },
    { name = "priority", type = "number", default = 30, description = "rank among campaigns" },
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
  caps = { customer = { { 2, "7d" } } },
  variants = {
    { id = "invite", weight = 1, content = {
        headline = "Give " .. P.reward .. ", get " .. P.reward,
        body = "Share your link with a friend, {{first_name|friend}}.",
    } },
  },
  eligible = function(p, ctx)
    if (p.orders or 0) < P.min_orders then
      return false, "too few orders"
    end
    return true
  end,
}
