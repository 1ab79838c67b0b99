-- Email channel: a subject, an HTML part and a text part, posted as JSON to
-- an HTTP email provider.  The provider comes from the config, never from a
-- script:
--   channels = { email = { endpoint = "https://api.mail.example/v3/send",
--                          api_key = env("MAIL_KEY"), from = "Shop <news@shop.example>" } }
-- Campaign content fields used: subject (or headline), html_raw / html (or
-- body), text (or body); they are templates like any content field.

local function unescape(s)  -- content is HTML-escaped; the text part wants plain text
  return (s:gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&quot;", '"'):gsub("&#39;", "'"):gsub("&amp;", "&"))
end

local function one_line(s) return (s:gsub("[\r\n]+", " ")) end

return {
  channel = "email",
  policy  = { customer = { { 3, "7d" }, { 1, "1d" } }, quiet_hours = { 21, 8 }, consent = "email" },

  -- offer = { campaign_id, variant, channel, content }; p = profile; ctx.now
  render = function(offer, p, ctx)
    local to = p.email
    if type(to) ~= "string" or not to:find("^[^%s@<>,]+@[^%s@<>,]+%.[^%s@<>,]+$") then
      return nil, "no valid email address"
    end
    local c = offer.content or {}
    local subject = c.subject or c.headline
    if type(subject) ~= "string" or subject == "" then
      return nil, "content has no subject or headline"
    end
    local body = c.body or c.body_raw or ""
    local html = c.html_raw or c.html or ("<p>" .. body .. "</p>")
    local text = c.text or unescape(c.body or c.headline or "")
    return { to = to, name = p.first_name, subject = one_line(unescape(subject)),
             html = html, text = text, campaign = offer.campaign_id, variant = offer.variant }
  end,

  -- msg = what render returned; settings = config channels.email; meta.key =
  -- the idempotency key (also sent as the Idempotency-Key header)
  deliver = function(msg, net, settings, meta)
    if type(settings.endpoint) ~= "string" then
      return false, "channels.email.endpoint is not configured"
    end
    local payload = {
      from = settings.from or "promod <no-reply@localhost>",
      to = { { email = msg.to, name = msg.name } },
      subject = msg.subject,
      content = { { type = "text/plain", value = msg.text },
                  { type = "text/html", value = msg.html } },
      custom_args = { campaign = msg.campaign, variant = msg.variant, message_key = meta.key },
    }
    return net.http_post(settings.endpoint, payload,
                         { Authorization = "Bearer " .. tostring(settings.api_key or "") })
  end,
}
