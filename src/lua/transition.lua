-- SPDX-License-Identifier: MIT
-- One agent's state change: kill, restart, interrupt, resume or close.
-- ARGV: town, command id, idempotency spec, op, agent id, time (hash form),
--       time (JSON form), then what the directory saw of the agent (as_seen)
local town, cmd_id, spec, op, id, ts_hash, ts = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]

local idem = idem_spec(town, cmd_id, spec)
local prev = idem_get(idem)
if prev then return prev end
-- One read of the agent for every check below (a fifth of the script's
-- cost was reading it field by field).
local akey = KEY.agent(town, id)
local kind = type_of(akey)
local f = kind == 'hash' and
          redis.call('HMGET', akey, 'name', 'nickname', 'role_id', 'id', 'state') or nil
if not seen_matches(f, 8) then return STALE end
if kind == 'none' then
  return finish(idem, op, 'agent_not_found', 'agent ' .. id .. ' not found', ts, {})
elseif kind ~= 'hash' then
  return finish(idem, op, 'internal', akey .. ' holds a ' .. kind .. ', not a hash', ts, {})
elseif f[4] ~= id then
  return finish(idem, op, 'agent_not_found', unreadable(akey, id), ts, {})
end
local bad = wrong_type(concat({ KEY.activity(town, id), 'list',
                                KEY.agent_events(town, id), 'stream' }, town_keys(town)))
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
