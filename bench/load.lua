-- wrk script for bench/load: drives the shim with WebSEAL-like DSC traffic and checks the
-- result code of every answer. Settings come from the environment (bench/load sets them):
--
--   MODE     seed | get | create | change | mix
--   THREADS  wrk's -t (sessions are divided among the threads by index)
--   SALT     40 characters that start every session ID of this harness run
--   N        sessions seeded so far (generation "A", indexes 0 .. N-1); get/change/mix use them
--   FROM, TO seed: create the seeded sessions FROM .. TO-1; DONE_DIR: a file per finished thread
--   GEN      one capital letter other than A: the generation of the sessions this run creates
--   MIX      mix: percentages "get,change,create,terminate" (terminate is followed by a create)
--   SEEDED_V0  1 when no changeSession has touched the seeded sessions yet (their version is 0)
--
-- A session ID is SALT .. GEN .. 10 digits .. "=" (52 characters, like WebSEAL's); its user
-- is "u" .. GEN .. digits .. "@bench.example", so each session has its own user and a
-- getSession answer tells which session it is.
--
-- Versions for changeSession. wrk does not tell which request an answer belongs to, so each
-- thread owns the sessions whose index it was given and changes only those, tracking versions
-- without ever guessing:
--   * a session's version is known when this thread created it (0), when SEEDED_V0 says so,
--     or from a getSession answer (versions only grow, so the largest one seen is kept);
--   * changeSession is sent only for a session with a known version and no change in flight;
--     the session then waits for its new version, which it gets back either from a
--     getSession answer showing it, or when no changeSession of this thread is in flight
--     any more (every change sent has then been answered);
--   * terminateSession is sent only for a session with a known version, no change and no
--     getSession in flight (a getSession answer names its session, so these are counted);
--     the session leaves the pool at once and a createSession of a fresh one follows;
--   * a created session joins the pool only once no createSession of this thread is in
--     flight (so it surely exists before anything reads it).
-- When no session qualifies (or too many wait, in MODE=change), a getSession goes out instead:
-- the counts per operation that the run prints show the mix as it was driven.

local mode = os.getenv("MODE") or "get"
local nthreads = tonumber(os.getenv("THREADS") or "1")
local salt = os.getenv("SALT") or string.rep("x", 40)
local nseeded = tonumber(os.getenv("N") or "0")
local seed_from = tonumber(os.getenv("FROM") or "0")
local seed_to = tonumber(os.getenv("TO") or "0")
local done_dir = os.getenv("DONE_DIR")
local gen = os.getenv("GEN") or "B"
local seeded_v0 = os.getenv("SEEDED_V0") == "1"
local mix = {}
for n in string.gmatch(os.getenv("MIX") or "80,10,5,5", "%d+") do mix[#mix + 1] = tonumber(n) end

local SUCCESS = "952467756"
local path = "/DSess/services/DSess"
local NS = ' xmlns:ns1="http://sms.am.tivoli.com"'
local OPS = { "getSession", "createSession", "changeSession", "terminateSession", "ping" }

-- Set by setup() in each thread's environment.
tindex = tindex or 0
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tindex", counter)
  counter = counter + 1
  threads[#threads + 1] = thread
end

---------------------------------------------------------------------------------------------
-- Messages

local function key_of(g, index) return g .. string.format("%010d", index) end
local function id_of(key) return salt .. key .. "=" end

local function envelope(op, inner)
  return '<?xml version="1.0" encoding="UTF-8"?>\n<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><SOAP-ENV:Body><ns1:'
    .. op .. NS .. '>' .. inner .. '</ns1:' .. op .. '></SOAP-ENV:Body></SOAP-ENV:Envelope>\n'
end

local headers = {}
for _, op in ipairs(OPS) do
  headers[op] = { ["Content-Type"] = "text/xml; charset=utf-8", ["SOAPAction"] = '"' .. op .. '"' }
end
local function post(op, inner) return wrk.format("POST", path, headers[op], envelope(op, inner)) end

local function item(class, instance, value)
  local v
  if value == nil then v = '<ns1:value xsi:nil="true"/>' else v = '<ns1:value>' .. value .. '</ns1:value>' end
  return '<ns1:data>' .. v .. '<ns1:dataClass>' .. class .. '</ns1:dataClass><ns1:instance>'
    .. instance .. '</ns1:instance><ns1:changePolicy>1</ns1:changePolicy></ns1:data>'
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function random_base64(nbytes)
  local out = {}
  for _ = 1, nbytes / 3 do
    local n = math.random(0, 16777215)
    local a, b, c, d = math.floor(n / 262144) % 64, math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64
    out[#out + 1] = B64:sub(a + 1, a + 1) .. B64:sub(b + 1, b + 1) .. B64:sub(c + 1, c + 1) .. B64:sub(d + 1, d + 1)
  end
  return table.concat(out)
end

local function random_uuid()
  return string.format("%08x-%04x-%04x-%04x-%04x%08x", math.random(0, 0x7fffffff), math.random(0, 0xffff),
    math.random(0, 0xffff), math.random(0, 0xffff), math.random(0, 0xffff), math.random(0, 0x7fffffff))
end

-- The item set of a WebSEAL login, in the order WebSEAL sends it: a credential (1 536 random
-- bytes in base64, 2 048 characters, as large as the captured one) and 26 other items with
-- nil, empty, boolean, hex time and uuid values. Only the parts that differ per session are
-- built per request.
local now = os.time()
local hex = function(n) return string.format("0x%x", n) end
local CREDENTIAL_BYTES = 1536
local creds = {}
local static_a, static_b, static_c, item_bytes

local function build_static()
  static_a = table.concat({
    item("com.tivoli.am.eb.auth-type", "sms", "formsPassword"),
    item("com.tivoli.am.webseal.orig-auth-type", "webseal", nil),
    item("com.tivoli.am.webseal.mpa-type", "webseal", "0x0"),
    item("com.tivoli.am.webseal.lifetime-extended", "webseal", "false"),
    item("com.tivoli.am.webseal.refresh-failover", "webseal", "false"),
    item("com.tivoli.am.webseal.orig-session-key", "webseal", nil),
    -- An hour: sessions must outlive the seeding of a million and the runs after it.
    item("com.tivoli.am.webseal.inactivity-timeout", "webseal", "0xe10"),
    item("com.tivoli.am.webseal.custom-inactivity-timeout", "webseal", "false"),
    item("com.tivoli.am.webseal.custom-lifetime-timeout", "webseal", "false"),
    item("com.tivoli.am.webseal.otp", "webseal", nil),
    item("com.tivoli.am.webseal.auth-data", "webseal", nil),
    item("com.tivoli.am.webseal.cookie-jar.stored-cookies", "webseal", ""),
    item("com.tivoli.am.webseal.cookie-jar.managed-cookies", "webseal", "reset#;;;"),
  })
  static_b = table.concat({
    item("com.tivoli.am.eb.expiry", "sms", hex(now + 8 * 3600)),
    item("com.tivoli.am.sms.concurrent-session-key-class", "sms", "com.tivoli.am.eb.user-name"),
    item("com.tivoli.am.sms.concurrent-session-key-instance", "sms", "sms"),
  })
  static_c = table.concat({
    item("com.tivoli.am.eb.version", "sms", "0x1"),
    item("com.tivoli.am.sms.class", "sms", "com.tivoli.am.eb"),
    item("com.tivoli.am.sms.creation-time", "sms", hex(now)),
    item("com.tivoli.am.eb.is-inactive", "sms", "false"),
    item("com.tivoli.am.eb.last-access", "sms", hex(now)),
    item("com.tivoli.am.webseal.multi-domain-session", "webseal", "false"),
    item("com.tivoli.am.webseal.flush-sms-session", "webseal", "false"),
  })
  -- Bytes of items sent per session: values + data classes + instances (every session has
  -- the same, as keys have a fixed width).
  item_bytes = 0
  local all = static_a .. static_b .. static_c
    .. item("com.tivoli.am.eb.credential", "sms", string.rep("x", CREDENTIAL_BYTES / 3 * 4))
    .. item("com.tivoli.am.eb.user-name", "sms", "u" .. key_of("A", 0) .. "@bench.example")
    .. item("com.tivoli.am.sms.user-uuid", "sms", random_uuid())
    .. item("com.tivoli.am.sms.session-index", "sms", random_uuid())
  for v in string.gmatch(all, "<ns1:value>([^<]*)</ns1:value>") do item_bytes = item_bytes + #v end
  for v in string.gmatch(all, "<ns1:dataClass>([^<]*)</ns1:dataClass>") do item_bytes = item_bytes + #v end
  for v in string.gmatch(all, "<ns1:instance>([^<]*)</ns1:instance>") do item_bytes = item_bytes + #v end
end

local function create_request(key)
  -- Each credential differs: a random blob of this thread with the key written over its start.
  local cred = creds[math.random(1, #creds)]
  cred = "MIIF" .. key .. string.sub(cred, #key + 5)
  return post("createSession", '<ns1:replica>bench-webseald</ns1:replica><ns1:replicaSet>default</ns1:replicaSet><ns1:sessionID>'
    .. id_of(key) .. '</ns1:sessionID><ns1:sessionLimit>0</ns1:sessionLimit>'
    .. item("com.tivoli.am.eb.credential", "sms", cred) .. static_a
    .. item("com.tivoli.am.eb.user-name", "sms", "u" .. key .. "@bench.example")
    .. item("com.tivoli.am.sms.user-uuid", "sms", random_uuid())
    .. static_b
    .. item("com.tivoli.am.sms.session-index", "sms", random_uuid())
    .. static_c)
end

local function get_request(key)
  return post("getSession", '<ns1:replica>bench-webseald</ns1:replica><ns1:replicaSet>default</ns1:replicaSet><ns1:sessionID>'
    .. id_of(key) .. '</ns1:sessionID><ns1:ssoType>local</ns1:ssoType><ns1:ssoSource xsi:nil="true"/>')
end

local function change_request(key, version)
  -- What WebSEAL sends every dsess-last-access-update-interval: the last-access item alone.
  return post("changeSession", '<ns1:replica>bench-webseald</ns1:replica><ns1:replicaSet>default</ns1:replicaSet><ns1:sessionID>'
    .. id_of(key) .. '</ns1:sessionID><ns1:version>' .. version .. '</ns1:version><ns1:push>false</ns1:push><ns1:sessionLimit>0</ns1:sessionLimit>'
    .. item("com.tivoli.am.eb.last-access", "sms", hex(os.time())))
end

local function terminate_request(key, version)
  return post("terminateSession", '<ns1:replica>bench-webseald</ns1:replica><ns1:replicaSet>default</ns1:replicaSet><ns1:sessionID>'
    .. id_of(key) .. '</ns1:sessionID><ns1:level>0</ns1:level><ns1:version>' .. version .. '</ns1:version><ns1:reason>952467606</ns1:reason>')
end

-- Built in init(): wrk adds the Host header to its templates only then.
local ping_request

---------------------------------------------------------------------------------------------
-- Per-thread state

sent = {}      -- operation -> requests sent
answered = {}  -- operation -> answers
failures = {}  -- operation -> answers that are not success (or not HTTP 200)
samples = {}   -- a few failed answers, for the report
item_bytes_out = 0

-- The pool: this thread's live sessions. Slots 1 .. n_own_seeded start out holding the seeded
-- sessions this thread owns without being stored (a million keys need no table); a slot
-- holds an explicit key once something moved into it.
local n_own_seeded = 0
local pool, pos, pool_n = {}, {}, 0
local dead = {}        -- seeded keys terminated by this run
local ver = {}         -- key -> known version
local changing = {}    -- key -> the version its change in flight will make
local n_changing = 0
local changes_out, creates_out = 0, 0
local gets_out = {}    -- key -> getSession requests in flight
local pending_new = {} -- created, not yet surely stored
local queue = {}       -- requests to send next (the create after a terminate)
local fresh = 0        -- fresh sessions created by this thread
local verified = false
local seed_next, seed_sent, seed_answered, seed_quota = 0, 0, 0, 0

local function seeded_key(slot) return key_of("A", tindex + (slot - 1) * nthreads) end
local function slot_key(slot) return pool[slot] or seeded_key(slot) end

local function slot_of(key)
  local p = pos[key]
  if p then return p end
  if dead[key] or string.sub(key, 1, 1) ~= "A" then return nil end
  local index = tonumber(string.sub(key, 2))
  if index % nthreads ~= tindex or index >= nseeded then return nil end
  return (index - tindex) / nthreads + 1
end

local function pool_add(key)
  pool_n = pool_n + 1
  pool[pool_n] = key
  pos[key] = pool_n
end

local function pool_remove(key)
  local slot = slot_of(key)
  local last = slot_key(pool_n)
  pool[slot] = last
  pos[last] = slot
  pool[pool_n] = nil
  pool_n = pool_n - 1
  pos[key] = nil
  dead[key] = true
end

local function known_version(key)
  local v = ver[key]
  if v == nil and seeded_v0 and string.sub(key, 1, 1) == "A" then v = 0 end
  return v
end

local function flush_changes()
  for key, v in pairs(changing) do ver[key] = v end
  changing, n_changing = {}, 0
end

local function flush_created()
  for _, key in ipairs(pending_new) do
    pool_add(key)
    ver[key] = 0
  end
  pending_new = {}
end

function init(args)
  ping_request = post("ping", "<ns1:something>0</ns1:something>")
  math.randomseed(os.time() * 1000 + tindex * 7919 + (tonumber(os.getenv("RANDOM_SEED") or "0")))
  for _ = 1, 8 do creds[#creds + 1] = random_base64(CREDENTIAL_BYTES) end
  build_static()
  item_bytes_out = item_bytes
  for _, op in ipairs(OPS) do sent[op], answered[op], failures[op] = 0, 0, 0 end
  if nseeded > tindex then n_own_seeded = math.floor((nseeded - 1 - tindex) / nthreads) + 1 end
  pool_n = n_own_seeded
  if mode == "seed" then
    seed_next = seed_from + ((tindex - seed_from) % nthreads)
    for i = seed_next, seed_to - 1, nthreads do seed_quota = seed_quota + 1 end
    if seed_quota == 0 then io.open(done_dir .. "/" .. tindex, "w"):close() end
  end
end

---------------------------------------------------------------------------------------------
-- Requests

local function send(op, req)
  sent[op] = sent[op] + 1
  return req
end

local function random_live()
  if pool_n == 0 then return nil end
  return slot_key(math.random(1, pool_n))
end

local function send_get(key)
  key = key or random_live()
  if key == nil then return send("ping", ping_request) end
  gets_out[key] = (gets_out[key] or 0) + 1
  return send("getSession", get_request(key))
end

local function new_key()
  local key = key_of(gen, tindex + fresh * nthreads)
  fresh = fresh + 1
  return key
end

local function send_create()
  local key = new_key()
  creates_out = creates_out + 1
  pending_new[#pending_new + 1] = key
  return send("createSession", create_request(key))
end

local function send_change()
  -- Once many sessions wait for their new version, let the changes in flight drain.
  if n_changing > 4096 or n_changing * 2 > pool_n then return send_get() end
  for _ = 1, 8 do
    local key = random_live()
    local v = key and known_version(key)
    if v and not changing[key] then
      changing[key] = v + 1
      n_changing = n_changing + 1
      changes_out = changes_out + 1
      return send("changeSession", change_request(key, v))
    end
  end
  return send_get()
end

local function send_terminate()
  for _ = 1, 8 do
    local key = random_live()
    local v = key and known_version(key)
    if v and not changing[key] and (gets_out[key] or 0) == 0 then
      pool_remove(key)
      ver[key] = nil
      queue[#queue + 1] = send_create
      return send("terminateSession", terminate_request(key, v))
    end
  end
  return send_get()
end

function request()
  -- wrk calls thread 0's request() once before the thread runs, only to count the requests
  -- it returns; that one is never sent.
  if tindex == 0 and not verified then
    verified = true
    return ping_request
  end
  if #queue > 0 then
    return table.remove(queue, 1)()
  end
  if mode == "get" then
    if nseeded == 0 then return send("ping", ping_request) end
    return send("getSession", get_request(key_of("A", math.random(0, nseeded - 1))))
  elseif mode == "create" then
    return send("createSession", create_request(new_key()))
  elseif mode == "seed" then
    if seed_next >= seed_to then return send("ping", ping_request) end
    local key = key_of("A", seed_next)
    seed_next = seed_next + nthreads
    return send("createSession", create_request(key))
  elseif mode == "change" then
    return send_change()
  end
  local r = math.random(1, 100)
  if r <= mix[1] then return send_get() end
  r = r - mix[1]
  if r <= mix[2] then return send_change() end
  r = r - mix[2]
  if r <= mix[3] then return send_create() end
  return send_terminate()
end

-- Seeding: a thread that has sent its share idles (a ping every 50 ms per connection) until
-- bench/load sees that every thread is done and stops wrk.
if mode == "seed" then
  function delay()
    if seed_next >= seed_to then return 50 end
    return 0
  end
end

---------------------------------------------------------------------------------------------
-- Answers

local function failed(op, status, body)
  failures[op] = (failures[op] or 0) + 1
  if #samples < 5 then
    samples[#samples + 1] = op .. " HTTP " .. status .. ": " .. string.sub(body or "", 1, 600)
  end
end

function response(status, hdrs, body)
  local op = string.match(body, "<ns1:(%a+)Response") or "unknown"
  answered[op] = (answered[op] or 0) + 1
  local result = string.match(body, "<ns1:result>(%d+)</ns1:result>")
    or string.match(body, "<ns1:%a+Return>(%d+)</ns1:%a+Return>")
  if status ~= 200 or result ~= SUCCESS then
    failed(op, status, body)
  end
  if op == "createSession" then
    if mode == "seed" then
      seed_answered = seed_answered + 1
      if seed_answered % 25000 == 0 or seed_answered == seed_quota then
        io.stderr:write(string.format("  thread %d: %d of %d seeded\n", tindex, seed_answered, seed_quota))
      end
      if seed_answered == seed_quota then io.open(done_dir .. "/" .. tindex, "w"):close() end
    else
      creates_out = creates_out - 1
      if creates_out == 0 then flush_created() end
    end
  elseif op == "changeSession" then
    changes_out = changes_out - 1
    if changes_out == 0 then flush_changes() end
  elseif op == "getSession" and (mode == "mix" or mode == "change") and result == SUCCESS then
    -- The user names the session: "u" .. key .. "@bench.example" (a plain find is cheap).
    local at = string.find(body, "@bench.example<", 1, true)
    local key = at and string.match(string.sub(body, at - 12, at - 1), "^u(%u%d+)$")
    local v = tonumber(string.match(body, "<ns1:version>(%d+)</ns1:version>"))
    if key and v then
      gets_out[key] = (gets_out[key] or 1) - 1
      if gets_out[key] <= 0 then gets_out[key] = nil end
      local expect = changing[key]
      if expect then
        if v >= expect then
          changing[key] = nil
          n_changing = n_changing - 1
          ver[key] = v
        end
      elseif slot_of(key) and v > (known_version(key) or -1) then
        ver[key] = v
      end
    end
  end
end

---------------------------------------------------------------------------------------------
-- Report

function done(summary, latency, requests)
  local s, a, f = {}, {}, {}
  local item_b = 0
  local out = {}
  for _, t in ipairs(threads) do
    for op, n in pairs(t:get("sent") or {}) do s[op] = (s[op] or 0) + n end
    for op, n in pairs(t:get("answered") or {}) do a[op] = (a[op] or 0) + n end
    for op, n in pairs(t:get("failures") or {}) do f[op] = (f[op] or 0) + n end
    for _, sample in ipairs(t:get("samples") or {}) do out[#out + 1] = sample end
    item_b = t:get("item_bytes_out") or item_b
  end
  local failed_total, answered_total, ops = 0, 0, {}
  for _, op in ipairs(OPS) do
    failed_total = failed_total + (f[op] or 0)
    answered_total = answered_total + (a[op] or 0)
    if (a[op] or 0) > 0 then ops[#ops + 1] = string.format("%s:%d", op, a[op]) end
  end
  for op, n in pairs(a) do
    if op == "unknown" then
      failed_total = failed_total + (f[op] or 0)
      ops[#ops + 1] = "unknown:" .. n
    end
  end
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  for _, sample in ipairs(out) do io.write("FAILED " .. string.gsub(sample, "\n", " ") .. "\n") end
  io.write(string.format("RESULT mode=%s requests=%d seconds=%.2f rps=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f failures=%d socket_errors=%d item_bytes=%d answered=%s\n",
    mode, summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    failed_total, errors, item_b, table.concat(ops, ",")))
end
