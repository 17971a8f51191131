-- wrk script: drives one DSC operation and checks every answer's result code.
-- OP=get  : getSession of an existing session (ID in SESSION)
-- OP=create: createSession with a fresh ID per request and a WebSEAL-sized item set
-- OP=seed  : createSession of SESSION itself (run briefly before OP=get)
local op = os.getenv("OP") or "get"
local session = os.getenv("SESSION") or "bench-session"
local counter = 0
local thread_tag = "t"
local failures = 0
local threads = {}

local function envelope(inner)
  return '<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><SOAP-ENV:Body>' .. inner .. '</SOAP-ENV:Body></SOAP-ENV:Envelope>'
end

local function item(class, instance, value)
  return '<ns1:data><ns1:value>' .. value .. '</ns1:value><ns1:dataClass>' .. class .. '</ns1:dataClass><ns1:instance>' .. instance .. '</ns1:instance><ns1:changePolicy>1</ns1:changePolicy></ns1:data>'
end

local items = {}
items[#items + 1] = item("com.tivoli.am.eb.credential", "sms", string.rep("QUJD", 384))
for n = 1, 20 do
  items[#items + 1] = item("com.tivoli.am.webseal.bench-item-" .. n, "webseal", "value-" .. n)
end
local data = table.concat(items)
-- Each session belongs to its own user, as at a real login.
local function user(id) return item("com.tivoli.am.eb.user-name", "sms", "user-" .. id) end

local headers = { ["Content-Type"] = "text/xml; charset=utf-8" }
local path = "/DSess/services/DSess"

function setup(thread)
  thread:set("thread_tag", "t" .. #threads)
  threads[#threads + 1] = thread
end

function request()
  if op == "seed" then
    return wrk.format("POST", path, headers, envelope('<ns1:createSession xmlns:ns1="http://sms.am.tivoli.com"><ns1:replica>bench</ns1:replica><ns1:replicaSet>default</ns1:replicaSet><ns1:sessionID>' .. session .. '</ns1:sessionID><ns1:sessionLimit>0</ns1:sessionLimit>' .. data .. user(session) .. '</ns1:createSession>'))
  end
  if op == "create" then
    counter = counter + 1
    local id = "bench-" .. thread_tag .. "-" .. counter .. "-" .. math.random(1, 1000000000)
    return wrk.format("POST", path, headers, envelope('<ns1:createSession xmlns:ns1="http://sms.am.tivoli.com"><ns1:replica>bench</ns1:replica><ns1:replicaSet>default</ns1:replicaSet><ns1:sessionID>' .. id .. '</ns1:sessionID><ns1:sessionLimit>0</ns1:sessionLimit>' .. data .. user(id) .. '</ns1:createSession>'))
  end
  return wrk.format("POST", path, headers, envelope('<ns1:getSession xmlns:ns1="http://sms.am.tivoli.com"><ns1:replica>bench</ns1:replica><ns1:replicaSet>default</ns1:replicaSet><ns1:sessionID>' .. session .. '</ns1:sessionID><ns1:ssoType>local</ns1:ssoType><ns1:ssoSource xsi:nil="true"/></ns1:getSession>'))
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, "<ns1:result>952467756</ns1:result>", 1, true) then
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  local failed = 0
  for _, t in ipairs(threads) do failed = failed + (t:get("failures") or 0) end
  io.write(string.format("RESULT op=%s requests=%d rps=%.0f p50_ms=%.3f p99_ms=%.3f failures=%d non2xx=%d\n",
    op, summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, failed, summary.errors.status))
end
