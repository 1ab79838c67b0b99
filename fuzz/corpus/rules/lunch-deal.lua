-- A time-boxed app offer: weekdays 11:00-14:00 Paris time, for app users.
-- Shows schedules with days/hours/tz, the promo time helpers and a throttle
-- hook that reads the counts the core passes in.
return {
  id       = "lunch-deal",
  name     = "Weekday lunch deal (app)",
  channels = { "app" },
  priority = 40,
  schedule = {
    starts = "2026-01-01T00:00:00Z",
    days   = { "mon", "tue", "wed", "thu", "fri" },
    hours  = { 11, 14 },                 -- [11:00, 14:00) local time
    tz     = "Europe/Paris",
  },
  caps = { customer = { { 1, "1d" }, { 3, "7d" } } },
  variants = {
    { id = "A", weight = 3, content = { title = "Lunch on us, {{first_name|friend}}",
                                        body = "2-for-1 until 14:00 ({{city|your city}})" } },
    { id = "B", weight = 1, content = { title = "Hungry? 15% off lunch" } },
  },

  eligible = function(p, ctx)
    if not p.app_user then return false, "not an app user" end
    -- promo.hour gives the local hour; the schedule already limits the window,
    -- this shows the helper for finer rules (no deal in the last half hour).
    if promo.hour("Europe/Paris") == 13 and os.date("!%M") >= "30" then
      return false, "too late for lunch"
    end
    return true
  end,

  score = function(p, ctx)
    -- lapsed customers first: the longer since the last purchase, the higher
    local days = p.days_since_purchase or 0
    return 40 + promo.clamp(days / 10, 0, 30)
  end,

  -- counts.customer has every cap window plus 1h/1d/7d/30d;
  -- counts.channel has the app plugin's policy windows.
  throttle = function(p, ctx, counts)
    return (counts.channel["1d"] or 0) < 5
  end,
}
