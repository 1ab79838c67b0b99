-- Push channel: title, body and a data payload for a mobile push provider
-- (FCM/APNs-style HTTP API).  Configure:
--   channels = { push = { endpoint = "https://push.example/v1/send", api_key = env("PUSH_KEY") } }
-- The device token is the profile's push_token.  Content fields: title (or
-- headline), body, url, and data = { ... } (string values) for the app.

local TITLE_MAX, BODY_MAX = 65, 240

local function cut(s, n)
  if #s <= n then return s end
  s = s:sub(1, n - 3)
  s = s:gsub("[\128-\191]*$", ""):gsub("[\192-\255]$", "")  -- never cut a UTF-8 sequence
  return s .. "..."
end

local function unescape(s)
  return (s:gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&quot;", '"'):gsub("&#39;", "'"):gsub("&amp;", "&"))
end

return {
  channel = "push",
  policy  = { customer = { { 2, "1d" } }, quiet_hours = { 22, 8 }, consent = "push" },

  render = function(offer, p, ctx)
    if type(p.push_token) ~= "string" or p.push_token == "" then
      return nil, "no push token"
    end
    local c = offer.content or {}
    local title = c.title or c.headline
    if type(title) ~= "string" or title == "" then return nil, "content has no title or headline" end
    local data = { campaign_id = offer.campaign_id, variant = offer.variant }
    if type(c.url) == "string" then data.url = c.url end
    if type(c.data) == "table" then
      for k, v in pairs(c.data) do data[tostring(k)] = tostring(v) end
    end
    return { token = p.push_token, title = cut(unescape(title), TITLE_MAX),
             body = cut(unescape(c.body or ""), BODY_MAX), data = data }
  end,

  deliver = function(msg, net, settings, meta)
    if type(settings.endpoint) ~= "string" then
      return false, "channels.push.endpoint is not configured"
    end
    return net.http_post(settings.endpoint,
      { to = msg.token, notification = { title = msg.title, body = msg.body }, data = msg.data },
      { Authorization = "key=" .. tostring(settings.api_key or "") })
  end,
}
