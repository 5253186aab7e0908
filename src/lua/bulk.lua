-- SPDX-License-Identifier: MIT
-- Town-wide changes over agents the bridge listed: stop_all and prune.
-- ARGV: town, command id, idempotency spec, op ("stop_all" or "prune"), all ("1"/"0"),
--       time (JSON form), the page's "more" ("1"/"0") and "next" cursor, then
--       candidate agent ids (one page of them).
-- Each candidate's state is re-read here, so an agent that changed since the
-- listing is judged by what it is now; one that is gone, or no longer an
-- agent tinytown can read, is left alone. Every key the change will write is
-- checked first, so a bad one refuses the whole command before any write.
local town, cmd_id, spec, op, all, ts = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1', ARGV[6]
local page = { more = ARGV[7], next = ARGV[8] }

local idem = idem_spec(town, cmd_id, spec)
local prev = idem_get(idem)
if prev then return prev end

local chosen, checks = {}, town_keys(town)
for i = 9, #ARGV do
  local id = ARGV[i]
  if agent_status(town, id) == 'hash' then
    local h = redis.call('HGETALL', KEY.agent(town, id))
    local state = norm_state(hash_get(h, 'state'))
    local take
    if op == 'stop_all' then take = not TERMINAL[state]
    else take = all or state == 'stopped' or state == 'error' end
    if take then
      chosen[#chosen + 1] = { id = id, h = h, state = state }
      for _, v in ipairs(agent_keys(town, id)) do checks[#checks + 1] = v end
    end
  end
end
local bad = wrong_type(checks)
if bad then return finish(idem, op, 'internal', bad, ts, {}, page) end

local done = {}
for _, c in ipairs(chosen) do
  local id, h, state = c.id, c.h, c.state
  if op == 'stop_all' then
    kill_agent(town, id, state, ts)
    done[#done + 1] = redis.call('HGETALL', KEY.agent(town, id))
  else
    redis.call('DEL', KEY.agent(town, id), KEY.inbox(town, id), KEY.urgent(town, id),
               KEY.activity(town, id), KEY.stop(town, id))
    emit(town, { type = 'agent_state_changed', agent_id = id, old = STATE_TITLE[state],
                 new = 'Removed', message = 'Agent removed', ts = ts })
    observe(town, id, nil)
    local lname = string.lower(hash_get(h, 'name') or '')
    if redis.call('HGET', KEY.names(town), lname) == id then
      redis.call('HDEL', KEY.names(town), lname)
    end
    done[#done + 1] = h
  end
end

return finish(idem, op, 'ok', '', ts, done, page)
