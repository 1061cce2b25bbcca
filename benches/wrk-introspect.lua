-- POST /oauth2/introspect with one token, for wrk (a load generator outside this
-- project, to check `introspectd loadtest --mode http` against):
--   TOKEN=$(introspectd mint --data-dir d) wrk -t1 -c64 -d2s -s benches/wrk-introspect.lua \
--     http://127.0.0.1:8080/oauth2/introspect
-- and the same wrk line without `-s` against /healthz for the baseline.
local token = os.getenv("TOKEN")
if token == nil or token == "" then
  error("set TOKEN to the token to introspect")
end
wrk.method = "POST"
wrk.body = "token=" .. token
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
