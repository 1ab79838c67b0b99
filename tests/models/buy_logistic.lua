-- The same propensity with L2-regularised logistic regression.
return {
  id = "buy_logistic",
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
  },
  algorithm = "logistic",
  min_positives = 100,
}
