-- No purchase in the next 90 days.
return {
  id = "churn",
  label = { churn = "purchase", within = "90d" },
  features = {
    { "tier", values = { "gold", "silver", "bronze" } },
    "age",
    "stats.custom.purchase",
    "stats.days_since.purchase",
  },
  algorithm = "xgboost",
  params = { trees = 100, depth = 3 },
  window = "360d",
  min_positives = 100,
}
