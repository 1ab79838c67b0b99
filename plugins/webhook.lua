-- Webhook channel: a generic signed JSON POST to a system of yours (a CRM,
-- a marketing-automation tool).  Configure the target and the secret:
--   channels = { webhook = { url = "https://crm.example/hooks/promod", secret = env("HOOK_SECRET") } }
-- Each request carries
--   X-Promod-Timestamp: <unix seconds>
--   X-Promod-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the secret>
--   Idempotency-Key:    <the message key>  (the same on every retry)
-- so the receiver can verify the sender, reject replays and drop duplicates.

return {
  channel = "webhook",
  policy  = {},

  render = function(offer, p, ctx)
    return { campaign_id = offer.campaign_id, variant = offer.variant,
             customer_id = p.id, content = offer.content }
  end,

  deliver = function(msg, net, settings, meta)
    if type(settings.url) ~= "string" then
      return false, "channels.webhook.url is not configured"
    end
    local ts = tostring(math.floor(promo.now()))
    local body = net.json({ id = meta.key, type = "promod.send", created = tonumber(ts),
                            attempt = meta.attempt, data = msg })
    local headers = { ["Content-Type"] = "application/json", ["X-Promod-Timestamp"] = ts }
    if type(settings.secret) == "string" and settings.secret ~= "" then
      headers["X-Promod-Signature"] = "sha256=" .. promo.hmac_sha256(settings.secret, ts .. "." .. body)
    end
    return net.http_post(settings.url, body, headers)
  end,
}
