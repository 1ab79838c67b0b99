-- Cart abandonment: a reminder (with an optional discount) some time after a cart is left.
-- A campaign template (docs/authoring.md): GET /api/v1/templates lists its
-- parameters; POST /api/v1/campaigns {"template": "cart_abandon", "params": {...}}
-- makes a draft campaign from it.  As it is, the file is a valid campaign
-- with every parameter at its default (promod check / promod test templates/).
local TEMPLATE = {
  description = "A reminder sent a while after a customer abandons a cart worth at least min_cart_value; cancelled by a purchase.",
  params = {
    { name = "id", type = "string", default = "cart-abandon", description = "campaign id" },
    { name = "name", type = "string", default = "Cart abandonment reminder", description = "campaign name" },
    { name = "channels", type = "strings", default = { "email" }, description = "channels the reminder is sent on (outbound)" },
    { name = "delay", type = "string", default = "1h", description = "wait after the cart_abandon event, a duration like 1h" },
    { name = "min_cart_value", type = "number", default = 20, description = "smallest p.cart_value that gets a reminder" },
    { name = "discount", type = "integer", default = 10, description = "percent off offered in the reminder (0 = none)" },
    { name = "priority", type = "number", default = 60, description = "rank among campaigns" },
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
  trigger = { event = "cart_abandon", delay = P.delay, cancel_on = "purchase" },
  caps = { customer = { { 1, "1d" } } },
  variants = {
    { id = "reminder", weight = 1, content = {
        subject = "{{first_name|You}} left something in your cart",
        body = P.discount > 0 and ("Come back and get " .. P.discount .. "% off your cart.")
                               or "Your cart is still waiting for you.",
    } },
  },
  eligible = function(p, ctx)
    if (p.cart_value or 0) < P.min_cart_value then
      return false, "cart below min_cart_value"
    end
    return true
  end,
}
