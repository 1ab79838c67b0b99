-- Web channel: offers are rendered into the page at decide time, so there is
-- nothing to deliver.  The policy is a per-customer contact limit across all
-- web campaigns (on top of each campaign's own caps).
return {
  channel = "web",
  policy  = { customer = { { 20, "1d" } } },
  -- render turns a chosen offer into what the page receives; the default
  -- (no render function) returns the offer's content unchanged.
  render  = function(offer, p, ctx) return offer.content end,
}
