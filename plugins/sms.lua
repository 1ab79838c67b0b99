-- SMS channel: one text, counted in segments the way carriers bill them.
-- Configure the provider:
--   channels = { sms = { endpoint = "https://sms.example/v1/messages", api_key = env("SMS_KEY"),
--                        from = "SHOP" } }
-- The number is the profile's phone in E.164 form ("+33612345678").
-- Content field: sms (or text, or headline).
--
-- Encoding: a text made only of GSM 03.38 characters is sent as GSM-7:
-- 160 septets in one segment, 153 per segment when split (the characters
-- ^ { } \ [ ] ~ | and the euro sign take two septets).  Any other
-- character makes the whole text UCS-2: 70 UTF-16 units in one segment,
-- 67 per segment when split (emoji take two units).  Texts needing more
-- than MAX_SEGMENTS segments are not sent (skipped with the reason).

local MAX_SEGMENTS = 3

local function codepoints(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local b = s:byte(i)
    local cp, len
    if b < 0x80 then cp, len = b, 1
    elseif b >= 0xF0 then cp, len = b % 0x08, 4
    elseif b >= 0xE0 then cp, len = b % 0x10, 3
    elseif b >= 0xC0 then cp, len = b % 0x20, 2
    else return nil end                       -- a stray continuation byte
    for j = 1, len - 1 do
      local c = s:byte(i + j)
      if not c or c < 0x80 or c > 0xBF then return nil end
      cp = cp * 64 + (c % 64)
    end
    out[#out + 1] = cp
    i = i + len
  end
  return out
end

local GSM_BASIC, GSM_EXT = {}, {}
for _, cp in ipairs(codepoints("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
                               .. "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")) do
  GSM_BASIC[cp] = true
end
for _, cp in ipairs(codepoints("^{}\\[~]|€\f")) do GSM_EXT[cp] = true end

-- Returns encoding ("gsm7" | "ucs2"), segments, units (septets or UTF-16 units).
local function segments(text)
  local cps = codepoints(text)
  if not cps then return nil end
  local septets, gsm = 0, true
  for _, cp in ipairs(cps) do
    if GSM_BASIC[cp] then septets = septets + 1
    elseif GSM_EXT[cp] then septets = septets + 2
    else gsm = false break end
  end
  if gsm then
    if septets <= 160 then return "gsm7", 1, septets end
    return "gsm7", math.ceil(septets / 153), septets
  end
  local units = 0
  for _, cp in ipairs(cps) do units = units + (cp > 0xFFFF and 2 or 1) end
  if units <= 70 then return "ucs2", 1, units end
  return "ucs2", math.ceil(units / 67), units
end

local function unescape(s)
  return (s:gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&quot;", '"'):gsub("&#39;", "'"):gsub("&amp;", "&"))
end

return {
  channel = "sms",
  policy  = { customer = { { 2, "7d" }, { 1, "1d" } }, quiet_hours = { 21, 9 }, consent = "sms" },

  render = function(offer, p, ctx)
    local to = p.phone
    if type(to) ~= "string" or not to:find("^%+[1-9]%d%d%d%d%d%d+$") or #to > 16 then
      return nil, "no phone number in E.164 form"
    end
    local c = offer.content or {}
    local text = c.sms or c.text or c.headline
    if type(text) ~= "string" or text == "" then return nil, "content has no sms text" end
    text = unescape(text)
    local enc, n, units = segments(text)
    if not enc then return nil, "text is not valid UTF-8" end
    if n > MAX_SEGMENTS then
      return nil, string.format("text needs %d %s segments (max %d)", n, enc, MAX_SEGMENTS)
    end
    return { to = to, text = text, encoding = enc, segments = n, units = units,
             campaign = offer.campaign_id }
  end,

  deliver = function(msg, net, settings, meta)
    if type(settings.endpoint) ~= "string" then
      return false, "channels.sms.endpoint is not configured"
    end
    return net.http_post(settings.endpoint,
      { from = settings.from or "promod", to = msg.to, text = msg.text,
        encoding = msg.encoding, segments = msg.segments, reference = meta.key },
      { Authorization = "Bearer " .. tostring(settings.api_key or "") })
  end,
}
