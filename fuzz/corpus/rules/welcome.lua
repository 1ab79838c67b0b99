-- The simplest useful campaign: everyone who is new gets a welcome banner.
-- Only `eligible` and `variants` are required; every other hook has a default.
return {
  id       = "welcome",
  name     = "Welcome banner for new visitors",
  channels = { "web", "app" },
  priority = 10,                      -- low: any targeted offer outranks it
  caps     = { customer = { { 2, "7d" } } },
  variants = {
    -- {{first_name|there}} renders the profile's first_name, or "there".
    { id = "A", weight = 1, content = { headline = "Welcome, {{first_name|there}}!",
                                        cta = "Take a look around" } },
  },
  -- p = the customer's profile (an unknown visitor has only p.id);
  -- ctx = the request: ctx.channel, ctx.placement, ctx.now, ctx.<context fields>.
  eligible = function(p, ctx)
    if p.stats and (p.stats.conversion or 0) > 0 then
      return false, "already a customer"   -- the reason shows in explain
    end
    return true
  end,
}
