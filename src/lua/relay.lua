-- SPDX-License-Identifier: MIT
-- The event relay's lease, cursor and reads; ARGV[1] picks the step.
--
-- A town's events are relayed by whoever holds `ttb:{town}:relay:lease` (the
-- holder's instance id, with a TTL). Every step first checks, in the same
-- atomic script, that the lease is still the caller's, so a relay that lost
-- it (stalled, cut off, overtaken after expiry) can neither move the cursor,
-- trim the outbox nor keep reading: the new holder alone decides where the
-- town continues.
--
-- Events come from two streams that share one id space (docs/events.md):
-- `tt:{town}:events`, tinytown's, capped at about 1,000 entries, and the
-- bridge's outbox `ttb:{town}:outbox`, where each event a bridge script
-- writes is kept under the id it got in tt:{town}:events, with that entry's
-- ordinal (entries-added when it was added). A read merges the two in id
-- order; an id in both is one event, written by the bridge. An entry after
-- the position that is only in tt:{town}:events is tinytown's own (the
-- outbox keeps every bridge entry past the cursor).
--
-- `ttb:{town}:relay:cursor` holds the id of the last entry Kafka
-- acknowledged (everything before it was acknowledged too) and
-- `...:cursor:ordinal` its ordinal. Each entry read comes with its ordinal
-- (the outbox's record, or its place in tt:{town}:events: entries-added
-- minus length counts what left the stream), so the relay sees a gap as a
-- jump of ordinals: entries that were trimmed from tinytown's stream before
-- anyone read them and were never in the outbox.
--
-- ARGV: op, town, instance id, then
--   acquire lease_ms                   -> {2 still ours | 1 taken | 0 held elsewhere, cursor, ordinal}
--   read    lease_ms renew pos ord count
--                                      -> {0} lease lost, or {1, entries-added, more, first id, entries}
--           (ord: the ordinal of pos, "" when unknown; entries: {id, ordinal,
--            "b" bridge or "t" tinytown, fields} in id order; more: 1 when
--            either stream may hold more after the last entry returned)
--   cursor  id ordinal                 -> {1}, or {0} when the lease is not ours;
--                                         the outbox is trimmed up to id
--   release id ordinal                 -> the same, then the lease is given up; id "" keeps the cursor
local op, town, me = ARGV[1], ARGV[2], ARGV[3]
local lease = KEY.relay_lease(town)
local cursor = KEY.relay_cursor(town)
local ordinal = KEY.relay_cursor_ordinal(town)
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

-- The ordinal of the first entry of `entries` (tt:{town}:events' entries
-- after pos, consecutive in it): its place counted from the stream's start.
local function first_ordinal(key, info, entries, pos, pos_ord)
  local base = info['entries-added'] - info['length']
  local first = info['first-entry']
  if type(first) == 'table' and first[1] == entries[1][1] then return base + 1 end
  -- pos is still in the stream (what is before the first entry was trimmed
  -- away, pos is not): the entry right after it.
  if pos_ord ~= '' then return tonumber(pos_ord) + 1 end
  return base + #redis.call('XRANGE', key, '-', pos) + 1
end

if op == 'read' then
  if ARGV[5] == '1' then redis.call('PEXPIRE', lease, ARGV[4]) end
  local pos, pos_ord, count = ARGV[6], ARGV[7], tonumber(ARGV[8])
  local key, okey = KEY.events(town), KEY.outbox(town)
  local info = stream_info(key)
  local added = info and info['entries-added'] or 0
  local first = false
  if info and type(info['first-entry']) == 'table' then first = info['first-entry'][1] end
  if count == 0 then return { 1, added, 0, first, {} } end

  local ev, ob = {}, {}
  if info then ev = redis.call('XRANGE', key, '(' .. pos, '+', 'COUNT', count) end
  if redis.call('TYPE', okey).ok == 'stream' then
    ob = redis.call('XRANGE', okey, '(' .. pos, '+', 'COUNT', count)
  end
  -- A full batch from either stream ends the merge at its last id: what
  -- comes after it in the other one waits for the next read.
  local bound = nil
  if #ev == count then bound = ev[#ev][1] end
  if #ob == count and (not bound or id_cmp(ob[#ob][1], bound) < 0) then bound = ob[#ob][1] end
  local ord = 0
  if #ev > 0 then ord = first_ordinal(key, info, ev, pos, pos_ord) end

  local out, i, j = {}, 1, 1
  while ev[i] or ob[j] do
    local e, o = ev[i], ob[j]
    local c = 0
    if not o then c = -1 elseif not e then c = 1 else c = id_cmp(e[1], o[1]) end
    local id = c <= 0 and e[1] or o[1]
    if bound and id_cmp(id, bound) > 0 then break end
    if c < 0 then
      out[#out + 1] = { id, ord, 't', e[2] }
    else
      -- A bridge entry: its ordinal was recorded when it was written. Its
      -- bytes are those of the tt:{town}:events entry, when that is still there.
      local rec = tonumber(hash_get(o[2], 'ord')) or ord
      out[#out + 1] = { id, rec, 'b', c == 0 and e[2] or o[2] }
      j = j + 1
    end
    if c <= 0 then
      i = i + 1
      ord = ord + 1
    end
  end
  local more = 0
  if #ev == count or #ob == count then more = 1 end
  return { 1, added, more, first, out }
end

if op == 'cursor' or op == 'release' then
  if ARGV[4] ~= '' then
    redis.call('SET', cursor, ARGV[4])
    if ARGV[5] ~= '' then
      redis.call('SET', ordinal, ARGV[5])
    else
      redis.call('DEL', ordinal)
    end
    -- Kafka has everything up to the cursor: the outbox may let it go.
    local after = id_next(ARGV[4])
    if after and redis.call('TYPE', KEY.outbox(town)).ok == 'stream' then
      redis.call('XTRIM', KEY.outbox(town), 'MINID', after)
    end
  end
  if op == 'release' then redis.call('DEL', lease) end
  return { 1 }
end

return redis.error_reply('unknown relay step ' .. tostring(op))
