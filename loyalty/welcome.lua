-- A welcome bonus on sign-up, once: a customer with a ledger already has p.loyalty.
return {
  earn = function(event, p)
    if event.type == "signup" and not p.loyalty then
      return 100, "welcome bonus"
    end
  end,
}
