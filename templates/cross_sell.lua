-- Post-purchase cross-sell: a follow-up suggesting a related category.
-- A campaign template (docs/authoring.md): GET /api/v1/templates lists its
-- parameters; POST /api/v1/campaigns {"template": "cross_sell", "params": {...}}
-- makes a draft campaign from it.  As it is, the file is a valid campaign
-- with every parameter at its default (promod check / promod test templates/).
local TEMPLATE = {
  description = "A message some days after a purchase suggesting another category, for customers who have not bought from it.",
  params = {
    { name = "id", type = "string", default = "cross-sell", description = "campaign id" },
    { name = "name", type = "string", default = "Post-purchase cross-sell", description = "campaign name" },
    { name = "channels", type = "strings", default = { "email" }, description = "channels the follow-up is sent on (outbound)" },
    { name = "delay", type = "string", default = "3d", description = "wait after the purchase event" },
    { name = "category", type = "string", default = "accessories", description = "the category suggested" },
    { name = "priority", type = "number", default = 50, description = "rank among campaigns" },
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
  trigger = { event = "purchase", delay = P.delay },
  caps = { customer = { { 1, "7d" } } },
  variants = {
    { id = "suggest", weight = 1, content = {
        subject = "Goes well with your order, {{first_name|there}}",
        body = "Have a look at our " .. P.category .. ".",
    } },
  },
  eligible = function(p, ctx)
    if type(p.categories) == "table" then
      for _, c in ipairs(p.categories) do
        if c == P.category then
          return false, "already buys " .. P.category
        end
      end
    end
    return true
  end,
}
