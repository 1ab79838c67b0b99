-- The loyalty program (docs/promotions.md#loyalty): tiers over the points
-- earned in the last year, points that live a year, and the earn rules run
-- on every ingested event.
return {
  tiers  = { { name = "silver", points = 1000 }, { name = "gold", points = 5000 } },
  window = "365d",
  expiry = "365d",

  -- 1 point per EUR on purchase events, double for gold customers
  earn = function(event, p)
    if event.type ~= "purchase" or not event.revenue then return nil end
    local points = math.floor(event.revenue)
    if p.loyalty and p.loyalty.tier == "gold" then
      return 2 * points, "double points for gold"
    end
    return points, "1 point per EUR"
  end,
}
