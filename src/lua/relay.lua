-- SPDX-License-Identifier: MIT
-- The event relay's lease, cursor and reads; ARGV[1] picks the step.
--
-- A town's stream is relayed by whoever holds `ttb:{town}:relay:lease` (the
-- holder's instance id, with a TTL). Every step first checks, in the same
-- atomic script, that the lease is still the caller's, so a relay that lost
-- it (stalled, cut off, overtaken after expiry) can neither move the cursor
-- nor keep reading: the new holder alone decides where the town continues.
--
-- `ttb:{town}:relay:cursor` holds the id of the last entry Kafka acknowledged
-- (everything before it was acknowledged too) and `...:cursor:ordinal` how
-- many entries the stream had received up to and including it. Redis 7.0
-- does not record trimming in max-deleted-entry-id, but entries-added minus
-- length counts the entries that ever left the stream; comparing that with
-- the cursor's ordinal tells whether entries the relay never read were
-- trimmed away (a gap) or only ones it had already relayed.
--
-- ARGV: op, town, instance id, then
--   acquire lease_ms                          -> {2 still ours | 1 taken | 0 held elsewhere, cursor, ordinal}
--   read    lease_ms renew pos count before   -> {0} lease lost, or
--                                               {1, entries-added, length, first id, before, entries}
--           (before: entries <= pos still in the stream, counted only when asked)
--   cursor  id ordinal                        -> {1}, or {0} when the lease is not ours
--   release id ordinal                        -> the same, then the lease is given up; id "" keeps the cursor
local op, town, me = ARGV[1], ARGV[2], ARGV[3]
local lease = 'ttb:' .. town .. ':relay:lease'
local cursor = 'ttb:' .. town .. ':relay:cursor'
local ordinal = 'ttb:' .. town .. ':relay:cursor:ordinal'
local holder = redis.call('GET', lease)

if op == 'acquire' then
  local code = 2
  if holder ~= me then
    if holder then return { 0 } end
    redis.call('SET', lease, me, 'PX', ARGV[4])
    code = 1
  else
    redis.call('PEXPIRE', lease, ARGV[4])
  end
  return { code, redis.call('GET', cursor), redis.call('GET', ordinal) }
end

if holder ~= me then return { 0 } end

if op == 'read' then
  if ARGV[5] == '1' then redis.call('PEXPIRE', lease, ARGV[4]) end
  local key = tkey(town, 'events')
  local pos, count = ARGV[6], tonumber(ARGV[7])
  if redis.call('TYPE', key).ok ~= 'stream' then return { 1, 0, 0, false, 0, {} } end
  local info = redis.call('XINFO', 'STREAM', key)
  local first = hash_get(info, 'first-entry')
  local first_id = false
  if type(first) == 'table' then first_id = first[1] end
  local before = 0
  if ARGV[8] == '1' then before = #redis.call('XRANGE', key, '-', pos) end
  local entries = {}
  if count > 0 then entries = redis.call('XRANGE', key, '(' .. pos, '+', 'COUNT', count) end
  return { 1, tonumber(hash_get(info, 'entries-added')), tonumber(hash_get(info, 'length')),
           first_id, before, entries }
end

if op == 'cursor' or op == 'release' then
  if ARGV[4] ~= '' then
    redis.call('SET', cursor, ARGV[4])
    if ARGV[5] ~= '' then
      redis.call('SET', ordinal, ARGV[5])
    else
      redis.call('DEL', ordinal)
    end
  end
  if op == 'release' then redis.call('DEL', lease) end
  return { 1 }
end

return redis.error_reply('unknown relay step ' .. tostring(op))
