-- promod configuration: a Lua file returning a table.  Every key is optional;
-- the README lists them all with their defaults.
return {
  listen    = "127.0.0.1:8080",
  data_dir  = "./data",
  rules_dir = "./rules",
  plugins_dir = "./plugins",
  -- models_dir = "./models",   -- model files (docs/models.md)
  -- train_threads = 1,         -- XGBoost threads of a training in the server
  -- threads = 0,               -- 0 = one worker per core
  -- map_size_mb = 1024,       -- the store's initial map; it grows as data comes
  -- map_max_mb = 0,            -- 0 = grow as far as the disk allows
  -- api_keys = {            -- `promod key --role ROLE --id ID` prints a key and its entry
  --   { id = "site",  key_env = "PROMOD_SITE_KEY", role = "decide" },
  --   { id = "alice", sha256 = "<64 hex digits from promod key>", role = "marketer" },
  --   { id = "ops",   sha256 = "<64 hex digits from promod key>", role = "admin" },
  -- },
  -- tls = { cert = "/etc/promod/server.pem", key = "/etc/promod/server.key" },  -- needed beyond loopback with keys
  -- header_timeout = 10,     -- seconds for a complete request head
  -- ops_port = 8081,         -- /healthz and /metrics on a thread that never runs Lua: probe here
  -- listen_backlog = 4096,   -- accept queue per worker socket (capped by net.core.somaxconn)
}
