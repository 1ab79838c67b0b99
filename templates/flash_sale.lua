-- Flash sale: a time-boxed banner for everyone (or one tier).
-- A campaign template (docs/authoring.md): GET /api/v1/templates lists its
-- parameters; POST /api/v1/campaigns {"template": "flash_sale", "params": {...}}
-- makes a draft campaign from it.  As it is, the file is a valid campaign
-- with every parameter at its default (promod check / promod test templates/).
local TEMPLATE = {
  description = "A high-priority banner between starts and ends, optionally only for one loyalty tier.",
  params = {
    { name = "id", type = "string", default = "flash-sale", description = "campaign id" },
    { name = "name", type = "string", default = "Flash sale", description = "campaign name" },
    { name = "channels", type = "strings", default = { "web", "app" }, description = "channels the banner is shown on" },
    { name = "starts", type = "string", default = "2026-01-01T00:00:00Z", description = "start, ISO-8601" },
    { name = "ends", type = "string", default = "2030-12-31T23:59:59Z", description = "end, ISO-8601" },
    { name = "discount", type = "integer", default = 30, description = "percent off" },
    { name = "tier", type = "string", default = "any", description = "only this p.tier (any = everyone)" },
    { name = "priority", type = "number", default = 90, description = "rank among campaigns" },
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
  schedule = { starts = P.starts, ends = P.ends },
  caps = { customer = { { 5, "1d" } } },
  variants = {
    { id = "banner", weight = 1, content = {
        headline = "Flash sale: " .. P.discount .. "% off",
        body = "Only until " .. P.ends,
    } },
  },
  eligible = function(p, ctx)
    if P.tier ~= "any" and p.tier ~= P.tier then
      return false, "not " .. P.tier
    end
    return true
  end,
}
