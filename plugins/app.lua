-- In-app channel: like web, content is returned by decide for the app to show.
return {
  channel = "app",
  policy  = { customer = { { 10, "1d" } } },
  render  = function(offer, p, ctx) return offer.content end,
}
