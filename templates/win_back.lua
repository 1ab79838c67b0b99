-- Win-back: an offer for customers who have not bought for a while.
-- A campaign template (docs/authoring.md): GET /api/v1/templates lists its
-- parameters; POST /api/v1/campaigns {"template": "win_back", "params": {...}}
-- makes a draft campaign from it.  As it is, the file is a valid campaign
-- with every parameter at its default (promod check / promod test templates/).
local TEMPLATE = {
  description = "A banner offer for customers whose last purchase (p.last_purchase_at, unix seconds) is at least inactive_days old.",
  params = {
    { name = "id", type = "string", default = "win-back", description = "campaign id" },
    { name = "name", type = "string", default = "We miss you", description = "campaign name" },
    { name = "channels", type = "strings", default = { "web", "app" }, description = "channels the offer is shown on" },
    { name = "inactive_days", type = "integer", default = 90, description = "days since the last purchase" },
    { name = "discount", type = "integer", default = 15, description = "percent off offered" },
    { name = "priority", type = "number", default = 55, description = "rank among campaigns" },
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
  caps = { customer = { { 3, "7d" } } },
  variants = {
    { id = "offer", weight = 1, content = {
        headline = "We miss you, {{first_name|friend}}",
        body = P.discount .. "% off your next order",
    } },
  },
  eligible = function(p, ctx)
    if not p.last_purchase_at then
      return false, "never bought"
    end
    local now = ctx.now or os.time()
    if (now - p.last_purchase_at) / 86400 < P.inactive_days then
      return false, "bought recently"
    end
    return true
  end,
}
