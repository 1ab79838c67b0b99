-- Back in stock: tell customers who asked that an item is available again.
-- A campaign template (docs/authoring.md): GET /api/v1/templates lists its
-- parameters; POST /api/v1/campaigns {"template": "back_in_stock", "params": {...}}
-- makes a draft campaign from it.  As it is, the file is a valid campaign
-- with every parameter at its default (promod check / promod test templates/).
local TEMPLATE = {
  description = "A message on the back_in_stock event for customers who asked to be told (p.notify_stock).",
  params = {
    { name = "id", type = "string", default = "back-in-stock", description = "campaign id" },
    { name = "name", type = "string", default = "Back in stock", description = "campaign name" },
    { name = "channels", type = "strings", default = { "email" }, description = "channels the message is sent on (outbound)" },
    { name = "delay", type = "string", default = "1m", description = "wait after the back_in_stock event" },
    { name = "priority", type = "number", default = 80, description = "rank among campaigns" },
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
  trigger = { event = "back_in_stock", delay = P.delay },
  caps = { customer = { { 1, "1d" } } },
  variants = {
    { id = "notice", weight = 1, content = {
        subject = "It is back, {{first_name|there}}",
        body = "The item you wanted is in stock again.",
    } },
  },
  eligible = function(p, ctx)
    if p.notify_stock ~= true then
      return false, "did not ask to be told"
    end
    return true
  end,
}
