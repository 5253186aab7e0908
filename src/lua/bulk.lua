-- SPDX-License-Identifier: MIT
-- Town-wide changes over agents the bridge listed: stop_all and prune.
-- ARGV: town, command id, idempotency spec, op ("stop_all" or "prune"), all ("1"/"0"),
--       time (JSON form), then candidate agent ids.
-- Each candidate's state is re-read here, so an agent that changed since the
-- listing is judged by what it is now.
local town, cmd_id, spec, op, all, ts = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1', ARGV[6]

local idem = idem_spec(town, cmd_id, spec)
local prev = idem_get(idem)
if prev then return prev end

local done = {}
for i = 7, #ARGV do
  local id = ARGV[i]
  local akey = tkey(town, 'agent', id)
  local h = redis.call('HGETALL', akey)
  if #h > 0 then
    local state = norm_state(hash_get(h, 'state'))
    if op == 'stop_all' then
      if not TERMINAL[state] then
        kill_agent(town, id, state, ts)
        done[#done + 1] = redis.call('HGETALL', akey)
      end
    elseif all or state == 'stopped' or state == 'error' then
      redis.call('DEL', akey, tkey(town, 'inbox', id), tkey(town, 'urgent', id),
                 tkey(town, 'activity', id), tkey(town, 'stop', id))
      emit(town, { type = 'agent_state_changed', agent_id = id, old = STATE_TITLE[state],
                   new = 'Removed', message = 'Agent removed', ts = ts })
      observe(town, id, nil)
      local lname = string.lower(hash_get(h, 'name') or '')
      if redis.call('HGET', 'ttb:' .. town .. ':names', lname) == id then
        redis.call('HDEL', 'ttb:' .. town .. ':names', lname)
      end
      done[#done + 1] = h
    end
  end
end

return finish(idem, op, 'ok', '', ts, done)
