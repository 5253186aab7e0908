-- SPDX-License-Identifier: MIT
-- Create one agent.
-- ARGV: town, command id, idempotency spec, time (JSON form), new id, parent id or "",
--       name, spawn mode, what the directory saw of the parent (as_seen: "0",
--       or "1" and three more), n, n candidate ids (agents the bridge saw
--       with the same name), then the hash's field/value pairs.
local town, cmd_id, spec, ts, id, parent, name, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local at = 10
if ARGV[9] == '1' then at = 13 end
local ncand = tonumber(ARGV[at])
local op = 'spawn'

local idem = idem_spec(town, cmd_id, spec)
local prev = idem_get(idem)
if prev then return prev end

if parent ~= '' and not as_seen(town, parent, 9) then return STALE end
if parent ~= '' and agent_status(town, parent) ~= 'hash' then
  return finish(idem, op, 'agent_not_found', 'parent agent ' .. parent .. ' not found', ts, {})
end
local checks = concat(agent_keys(town, id), town_keys(town))
if parent ~= '' then checks = concat(checks, { KEY.agent_events(town, parent), 'stream' }) end
local bad = wrong_type(checks)
if bad then return finish(idem, op, 'internal', bad, ts, {}) end

-- A name stays unambiguous while its holder is alive. The candidates are the
-- agents the bridge saw with this name, plus the holder recorded in the
-- town's name index by the last spawn through any bridge (which closes the
-- race of two bridges spawning one name at once); each is re-read here,
-- atomically, since it may have changed since anyone looked.
local lname = string.lower(name)
local names = KEY.names(town)
local candidates = {}
for i = 1, ncand do candidates[#candidates + 1] = ARGV[at + i] end
local holder = redis.call('HGET', names, lname)
if holder then candidates[#candidates + 1] = holder end
for _, cid in ipairs(candidates) do
  local found = {}
  if type_of(KEY.agent(town, cid)) == 'hash' then
    found = redis.call('HMGET', KEY.agent(town, cid), 'name', 'state')
  end
  if found[1] and string.lower(found[1]) == lname and not TERMINAL[norm_state(found[2])] then
    return finish(idem, op, 'name_conflict',
                  'agent ' .. found[1] .. ' (' .. string.sub(cid, 1, 4) .. ') is ' ..
                  STATE_TITLE[norm_state(found[2])] .. '; choose another name or stop it first', ts, {})
  end
end

local akey = KEY.agent(town, id)
if redis.call('EXISTS', akey) == 1 then
  return finish(idem, op, 'internal', 'agent id ' .. id .. ' already exists', ts, {})
end
local fields = {}
for i = at + 1 + ncand, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', akey, unpack(fields))
redis.call('HSET', names, lname, id)

local ev_parent = nil
if parent ~= '' then ev_parent = parent end
emit(town, { type = 'agent_spawned', agent_id = id, new = 'Starting', message = 'Agent spawned',
             ts = ts, parent = ev_parent, spawn_mode = mode })
observe(town, id, 'starting')

return finish(idem, op, 'ok', '', ts, { redis.call('HGETALL', akey) })
