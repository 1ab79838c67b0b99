-- Tests of rules/spring-sale.lua: run with `promod test` (or `promod check --test`).
local c = campaign("spring-sale")

test("gold members in France are eligible", function()
  expect(c:eligible({ id = "u1", tier = "gold", country = "FR" }, { country = "FR" })).to_be(true)
end)

test("outside France nobody is", function()
  local ok, why = c:eligible({ id = "u2", tier = "gold", country = "DE" }, { country = "DE" })
  expect(ok).to_be(false)
  expect(why).to_be("not in France")
end)

test("high lifetime value scores higher", function()
  local lo = c:score({ id = "u3", ltv = 0 }, {})
  local hi = c:score({ id = "u4", ltv = 5000 }, {})
  expect(hi).to_be_above(lo)
end)

test("platinum members get variant B, rendered", function()
  local offer = c:decide({ id = "u5", tier = "platinum", country = "FR" }, { country = "FR" })
  expect(offer.variant).to_be("B")
  expect(offer.content.headline).to_be("20% off for platinum members")
end)

test("hooks get read-only profiles", function()
  local offer = c:decide({ id = "u6", tier = "gold", first_name = "Ana", country = "FR" }, {})
  expect(offer.campaign).to_be("spring-sale")
  expect(offer.content.body ~= nil or offer.content.body_raw ~= nil).to_be(true)
end)
