-- A targeted seasonal campaign showing all four hooks and the promo library.
local util = require "util"           -- shared helpers from rules/lib/util.lua

return {
  id         = "spring-sale",
  name       = "Spring sale banner",
  channels   = { "web", "app" },
  placements = { "home_banner" },     -- only this slot on the page
  priority   = 50,
  schedule   = { starts = "2026-01-01T00:00:00Z", ends = "2027-12-31T23:59:59Z" },
  caps = {
    customer = { { 3, "7d" }, { 1, "1d" } },   -- exact under concurrency
    total    = { { 100000, "1d" } },           -- campaign-wide daily budget
  },
  variants = {
    { id = "A", weight = 50, content = { headline = "Hi {{first_name|there}}, spring is here",
                                         body = "Up to 30% off city breaks" } },
    { id = "B", weight = 50, content = { headline = "20% off for {{tier|our}} members",
                                         body_raw = "<b>Spring</b> deals" } },   -- _raw: not escaped
  },

  -- 1. eligibility: who may see it
  eligible = function(p, ctx)
    if ctx.country and ctx.country ~= "FR" and p.country ~= "FR" then
      return false, "not in France"
    end
    return p.tier == "gold" or p.tier == "platinum" or util.any_interest(p, { "city", "museums" })
  end,

  -- 2. next-best-action score: higher wins among eligible campaigns
  score = function(p, ctx)
    local s = 50 * (1 + (p.ltv or 0) / 1000)
    if util.ltv_band(p) == "high" then s = s * 1.2 end
    -- recency from event stats, when the customer has any
    if p.stats and p.stats.last_seen and promo.days_since(p.stats.last_seen) > 30 then
      s = s * 1.1
    end
    return s
  end,

  -- 3. content selection: pick a variant (default: stable weighted bucketing)
  content = function(p, ctx, variants)
    if p.tier == "platinum" then return variants[2] end
    return variants[promo.bucket(p.id, "spring-sale") < 0.5 and 1 or 2]
  end,

  -- 4. throttle: extra pacing on top of the caps above
  throttle = function(p, ctx, counts)
    -- no more than one spring-sale banner an hour
    return counts.customer["1h"] < 1
  end,
}
