-- Tier upgrade: tell customers close to the next loyalty tier how close they are.
-- A campaign template (docs/authoring.md): GET /api/v1/templates lists its
-- parameters; POST /api/v1/campaigns {"template": "tier_upgrade", "params": {...}}
-- makes a draft campaign from it.  As it is, the file is a valid campaign
-- with every parameter at its default (promod check / promod test templates/).
local TEMPLATE = {
  description = "A banner for members of from_tier within within_points of next_tier_points lifetime points (p.loyalty).",
  params = {
    { name = "id", type = "string", default = "tier-upgrade", description = "campaign id" },
    { name = "name", type = "string", default = "Almost at the next tier", description = "campaign name" },
    { name = "channels", type = "strings", default = { "web", "app" }, description = "channels the banner is shown on" },
    { name = "from_tier", type = "string", default = "silver", description = "the members' current tier (p.loyalty.tier)" },
    { name = "next_tier", type = "string", default = "gold", description = "the tier they can reach" },
    { name = "next_tier_points", type = "integer", default = 1000, description = "lifetime points the next tier needs" },
    { name = "within_points", type = "integer", default = 200, description = "how close a member must be" },
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
  caps = { customer = { { 2, "7d" } } },
  variants = {
    { id = "progress", weight = 1, content = {
        headline = "You are close to " .. P.next_tier .. ", {{first_name|friend}}",
        body = "Only a few more points to go.",
    } },
  },
  eligible = function(p, ctx)
    local l = p.loyalty
    if not l or l.tier ~= P.from_tier then
      return false, "not " .. P.from_tier
    end
    local missing = P.next_tier_points - (l.lifetime or 0)
    if missing <= 0 or missing > P.within_points then
      return false, "not close to " .. P.next_tier
    end
    return true
  end,
}
