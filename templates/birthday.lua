-- Birthday: a gift on the customer's birthday.
-- A campaign template (docs/authoring.md): GET /api/v1/templates lists its
-- parameters; POST /api/v1/campaigns {"template": "birthday", "params": {...}}
-- makes a draft campaign from it.  As it is, the file is a valid campaign
-- with every parameter at its default (promod check / promod test templates/).
local TEMPLATE = {
  description = "A birthday offer shown on the day of p.birthday (YYYY-MM-DD or MM-DD), in UTC.",
  params = {
    { name = "id", type = "string", default = "birthday", description = "campaign id" },
    { name = "name", type = "string", default = "Birthday gift", description = "campaign name" },
    { name = "channels", type = "strings", default = { "web", "app" }, description = "channels the gift is shown on" },
    { name = "gift", type = "string", default = "a free dessert", description = "what the customer gets" },
    { name = "priority", type = "number", default = 70, description = "rank among campaigns" },
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
  caps = { customer = { { 1, "1d" } } },
  variants = {
    { id = "gift", weight = 1, content = {
        headline = "Happy birthday, {{first_name|friend}}!",
        body = "Your gift today: " .. P.gift,
    } },
  },
  eligible = function(p, ctx)
    if type(p.birthday) ~= "string" then
      return false, "no birthday"
    end
    local md = string.match(p.birthday, "(%d%d%-%d%d)$")
    local today = os.date("!%m-%d", ctx.now or os.time())
    if md ~= today then
      return false, "not today"
    end
    return true
  end,
}
