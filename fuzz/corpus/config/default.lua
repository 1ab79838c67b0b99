-- promod configuration: a Lua file returning a table.  Every key is optional;
-- the README lists them all with their defaults.
return {
  listen    = "127.0.0.1:8080",
  data_dir  = "./data",
  rules_dir = "./rules",
  plugins_dir = "./plugins",
  -- threads = 0,               -- 0 = one worker per core
  -- map_size_mb = 1024,
  -- api_keys = {
  --   { id = "site",  key_env = "PROMOD_SITE_KEY", role = "decide" },
  --   { id = "alice", key = "change-me-marketer", role = "marketer" },
  --   { id = "ops",   key = "change-me-admin",    role = "admin" },
  -- },
}
