-- SPDX-License-Identifier: MIT
-- Idempotency records of commands that run no script of their own (reads,
-- waits, references that did not resolve), a whole batch per call.
-- ARGV: mode, idempotency spec, then
--   mode "get": town, id pairs        -> per pair the stored record or false
--   mode "put": town, id, value triples -> per triple the record stored
--     before (another bridge was first: the caller answers with it) or
--     false when ours was stored.
--   Either way "E" + a message when the town's records cannot be kept (a
--   key of the wrong type): that command's problem, not the batch's.
--   mode "adopt": town, key of a record hash of the bridge's first version
--     (`ttb:{town}:cmds:{bucket}`) -> how many records moved into the town's
--     hash (kept until the old key would have expired); the old key goes.
local mode, spec = ARGV[1], ARGV[2]
if mode == 'adopt' then
  local idem = idem_spec(ARGV[3], '', spec)
  local old = ARGV[4]
  if type_of(old) ~= 'hash' then return 0 end
  local ttl = redis.call('TTL', old)
  local expire = idem.expire
  if ttl > 0 then expire = tostring(tonumber(idem.now) + ttl) end
  local flat, moved = redis.call('HGETALL', old), 0
  for i = 1, #flat, 2 do
    if redis.call('HSETNX', idem.hash, flat[i], flat[i + 1]) == 1 then
      redis.call('ZADD', idem.zset, expire, flat[i])
      moved = moved + 1
    end
  end
  redis.call('DEL', old)
  return moved
end
local out = {}
local step = mode == 'get' and 2 or 3
for i = 3, #ARGV, step do
  local usable, idem = pcall(idem_spec, ARGV[i], ARGV[i + 1], spec)
  if usable then
    local prev = idem_get(idem)
    if mode == 'put' and not prev then idem_put(idem, ARGV[i + 2]) end
    out[#out + 1] = prev or false
  else
    out[#out + 1] = 'E' .. string.gsub(idem.err, '^ERR ', '')
  end
end
return out
