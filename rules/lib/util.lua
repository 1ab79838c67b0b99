-- Shared helpers for campaign files: `local util = require "util"`.
-- Files under rules/lib/ are libraries, not campaigns.
local util = {}

-- true when the profile has any of the given interests
function util.any_interest(p, list)
  if type(p.interests) ~= "table" then return false end
  for _, want in ipairs(list) do
    if promo.has(p.interests, want) then return true end
  end
  return false
end

-- lifetime value bands used by several campaigns
function util.ltv_band(p)
  local ltv = p.ltv or 0
  if ltv >= 1000 then return "high" elseif ltv >= 200 then return "mid" end
  return "low"
end

return util
