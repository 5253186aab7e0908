-- SPDX-License-Identifier: MIT
-- State changes of agents of one town: kill, restart, interrupt, resume or
-- close, one after another in one atomic step (the bridge groups a round's
-- consecutive transitions of a town; what every change checks of the town is
-- checked once).
-- ARGV: town, idempotency spec, time (hash form), time (JSON form), then for
--       each change 7 strings: command id, op, agent id, and what the
--       directory saw of the agent ("1", name, nickname, role_id; or "0" and
--       three empty strings when the reference was the id itself).
-- Returns one reply per change, in order: its payload, or STALE.
local town, spec, ts_hash, ts = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local idem_keys = idem_town(town, spec)
local town_bad = wrong_type(town_keys(town))

local function transition(cmd_id, op, id, seen_at)
  local idem = idem_for(idem_keys, cmd_id)
  local prev = idem_get(idem)
  if prev then return prev end
  -- One read of the agent for every check below (a fifth of the script's
  -- cost was reading it field by field).
  local akey = KEY.agent(town, id)
  local kind = type_of(akey)
  local f = kind == 'hash' and
            redis.call('HMGET', akey, 'name', 'nickname', 'role_id', 'id', 'state') or nil
  if not seen_matches(f, seen_at) then return STALE end
  if kind == 'none' then
    return finish(idem, op, 'agent_not_found', 'agent ' .. id .. ' not found', ts, {})
  elseif kind ~= 'hash' then
    return finish(idem, op, 'internal', akey .. ' holds a ' .. kind .. ', not a hash', ts, {})
  elseif f[4] ~= id then
    return finish(idem, op, 'agent_not_found', unreadable(akey, id), ts, {})
  end
  local bad = town_bad or wrong_type({ KEY.activity(town, id), 'list',
                                       KEY.agent_events(town, id), 'stream' })
  if bad then return finish(idem, op, 'internal', bad, ts, {}) end
  local state = norm_state(f[5])
  local name = f[1] or id
  local old = STATE_TITLE[state]

  if op == 'kill' then
    kill_agent(town, id, state, ts)
  elseif op == 'restart' then
    redis.call('HSET', akey, 'state', 'idle', 'rounds_completed', '0', 'last_heartbeat', ts_hash)
    redis.call('DEL', KEY.stop(town, id))
    emit(town, { type = 'agent_state_changed', agent_id = id, old = old, new = 'Idle',
                 message = 'Agent restarted', ts = ts })
    observe(town, id, 'idle')
  elseif op == 'interrupt' then
    if TERMINAL[state] then
      return finish(idem, op, 'invalid_state',
                    'agent ' .. name .. ' is ' .. old .. ' and cannot be interrupted', ts, {})
    end
    redis.call('HSET', akey, 'state', 'paused')
    activity(town, id, ACT_INTERRUPT)
    emit(town, { type = 'agent_interrupted', agent_id = id, old = old, new = 'Paused',
                 message = 'Agent interrupted (paused)', ts = ts })
    observe(town, id, 'paused')
  elseif op == 'resume' then
    if state ~= 'paused' then
      return finish(idem, op, 'invalid_state',
                    'agent ' .. name .. ' is ' .. old .. ', not Paused', ts, {})
    end
    redis.call('HSET', akey, 'state', 'idle')
    redis.call('DEL', KEY.stop(town, id))
    activity(town, id, ACT_RESUME)
    emit(town, { type = 'agent_resumed', agent_id = id, old = 'Paused', new = 'Idle',
                 message = 'Agent resumed', ts = ts })
    observe(town, id, 'idle')
  elseif op == 'close' then
    if TERMINAL[state] then
      return finish(idem, op, 'invalid_state',
                    'agent ' .. name .. ' is already ' .. old, ts, {})
    end
    redis.call('HSET', akey, 'state', 'draining')
    redis.call('SET', KEY.stop(town, id), '1', 'EX', 3600)
    activity(town, id, ACT_CLOSE)
    emit(town, { type = 'agent_stopped', agent_id = id, old = old, new = 'Draining',
                 message = 'Agent closing (draining then stop)', ts = ts })
    observe(town, id, 'draining')
  else
    return redis.error_reply('unknown transition ' .. op)
  end
  return finish(idem, op, 'ok', '', ts, { redis.call('HGETALL', akey) })
end

local out = {}
for at = 5, #ARGV - 6, 7 do
  out[#out + 1] = transition(ARGV[at], ARGV[at + 1], ARGV[at + 2], at + 3)
end
return out
