-- decide-dry.wrk.lua — the reference decide script (../shared/bench/decide.wrk.lua,
-- path in DECIDE_SCRIPT) with "dry_run": true added to every body.
--
-- A dry run decides exactly like a real one (profile, hooks, caps checked
-- on the read snapshot, content, reply) but reserves nothing, so it skips
-- the one LMDB write transaction a served decide commits.  scripts/bench.sh
-- runs it to show what that write costs on the reference workload.
dofile(assert(os.getenv("DECIDE_SCRIPT"), "DECIDE_SCRIPT: path of decide.wrk.lua"))
local format = wrk.format
wrk.format = function(method, path, headers, body)
  if body and body:sub(1, 1) == "{" then
    body = '{"dry_run":true,' .. body:sub(2)
  end
  return format(method, path, headers, body)
end
