-- Browse abandonment: a nudge after product views without a cart.
-- A campaign template (docs/authoring.md): GET /api/v1/templates lists its
-- parameters; POST /api/v1/campaigns {"template": "browse_abandon", "params": {...}}
-- makes a draft campaign from it.  As it is, the file is a valid campaign
-- with every parameter at its default (promod check / promod test templates/).
local TEMPLATE = {
  description = "A nudge some time after a customer viewed a product (product_view) without adding to cart.",
  params = {
    { name = "id", type = "string", default = "browse-abandon", description = "campaign id" },
    { name = "name", type = "string", default = "Browse abandonment nudge", description = "campaign name" },
    { name = "channels", type = "strings", default = { "email" }, description = "channels the nudge is sent on (outbound)" },
    { name = "delay", type = "string", default = "2h", description = "wait after the product_view event" },
    { name = "min_views", type = "integer", default = 2, description = "product views (p.stats.product_view) needed" },
    { name = "priority", type = "number", default = 45, description = "rank among campaigns" },
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
  trigger = { event = "product_view", delay = P.delay, cancel_on = "add_to_cart" },
  caps = { customer = { { 1, "7d" } } },
  variants = {
    { id = "nudge", weight = 1, content = {
        subject = "Still thinking it over, {{first_name|there}}?",
        body = "The things you looked at are still here.",
    } },
  },
  eligible = function(p, ctx)
    local views = p.stats and p.stats.product_view or 0
    if views < P.min_views then
      return false, "too few product views"
    end
    return true
  end,
}
