-- wrk script for scripts/bench-webhook.sh: POSTs one envelope file as the Functions host
-- does (JSON body, invocation id header). usage: wrk ... -s benches/post.lua URL -- FILE
local req
function init(args)
  local f = assert(io.open(args[1], "rb"))
  local body = f:read("*a")
  f:close()
  req = wrk.format("POST", nil, {
    ["Content-Type"] = "application/json; charset=utf-8",
    ["X-Azure-Functions-InvocationId"] = "6f1c4a52-0000-4000-8000-000000000001",
    ["User-Agent"] = "Azure-Functions-Host/4.0",
  }, body)
end
function request()
  return req
end
