-- Propensity to convert on campaign "spring" within 7 days of an impression,
-- with gradient-boosted trees (scripts/gen-model-data.py plants the truth).
return {
  id = "buy_xgb",
  label = { conversion = "spring", within = "7d" },
  features = {
    { "tier", values = { "gold", "silver", "bronze" } },
    "age",
    { "log_clicks", fn = function(p, ctx) return math.log(1 + ((p.stats or {}).click or 0)) end },
    { "recent_buyer", fn = function(p, ctx)
        local last = p.stats and p.stats.last and p.stats.last.purchase
        return last ~= nil and ctx.now - last < 30 * 86400
      end },
    { "ctx.device", values = { "mobile", "desktop" } },
    "stats.events",
  },
  algorithm = "xgboost",
  params = { trees = 150, depth = 3, eta = 0.1 },
  min_positives = 100,
}
