-- SPDX-License-Identifier: MIT
-- State capture: for each agent, compare, emit and record in one atomic step.
--
-- `ttb:{town}:observed` maps agent id -> the last state the bridge knows.
-- The bridge's own scripts update it together with every change they make,
-- so whatever differs here was done by someone else (an agent loop, a `tt`
-- command). Reading the agent, writing the event and updating the record in
-- one script is what keeps a transition from being reported twice: a second
-- bridge, or a notification and a reconcile racing each other, find the
-- record already updated and do nothing.
-- Events go through emit() like every script's: tinytown's streams and the
-- bridge's outbox, so a burst of thousands reaches Kafka whole.
--
-- ARGV: mode ("check", or "baseline" for a town seen for the first time:
--       agents not yet recorded are recorded without an event), town,
--       time (JSON form), then agent ids.
-- Returns one code per id: 0 nothing changed, 1 agent_spawned,
--         2 agent_state_changed, 3 removed, 4 recorded silently.
-- Each id is handled on its own; the batch only saves round trips.
local mode, town, ts = ARGV[1], ARGV[2], ARGV[3]
local okey = KEY.observed(town)

local function capture_one(id)
  local akey = KEY.agent(town, id)
  local seen = redis.call('HGET', okey, id)
  -- Only a hash is an agent; anything else under the name is not tinytown's.
  local fields = redis.pcall('HMGET', akey, 'state', 'parent_agent_id', 'spawn_mode')
  if fields.err then
    fields = nil
  elseif seen and fields[1] and norm_state(fields[1]) == norm_state(seen) then
    -- The common case, a change the bridge made itself (its scripts record
    -- the state they write): nothing to write, nothing more to check.
    return 0
  elseif not (fields[1] or fields[2] or fields[3]) and redis.call('TYPE', akey).ok ~= 'hash' then
    fields = nil
  end
  -- An agent whose event stream is unusable is skipped (nothing written);
  -- the next reconcile looks again.
  if wrong_type({ KEY.agent_events(town, id), 'stream' }) then return 0 end

  if not fields then
    if not seen then return 0 end
    redis.call('HDEL', okey, id)
    emit(town, { type = 'agent_state_changed', agent_id = id, old = STATE_TITLE[norm_state(seen)],
                 new = 'Removed', message = 'Agent removed', ts = ts })
    return 3
  end

  local state = norm_state(fields[1])
  if not seen then
    redis.call('HSET', okey, id, state)
    if mode == 'baseline' then return 4 end
    -- tinytown reads an unknown spawn mode as fresh.
    local spawn_mode = fields[3]
    if spawn_mode ~= 'fresh' and spawn_mode ~= 'forkedcontext' and spawn_mode ~= 'resumed' then
      spawn_mode = 'fresh'
    end
    local parent = nil
    if fields[2] and fields[2] ~= '' then parent = fields[2] end
    emit(town, { type = 'agent_spawned', agent_id = id, new = STATE_TITLE[state],
                 message = 'Agent spawned', ts = ts, parent = parent, spawn_mode = spawn_mode })
    return 1
  end

  local old = norm_state(seen)
  if old == state then return 0 end
  redis.call('HSET', okey, id, state)
  emit(town, { type = 'agent_state_changed', agent_id = id, old = STATE_TITLE[old],
               new = STATE_TITLE[state], message = 'Agent state changed', ts = ts })
  return 2
end

local bad = wrong_type(town_keys(town))
if bad then return redis.error_reply('ERR ' .. bad) end
local codes = {}
for i = 4, #ARGV do codes[#codes + 1] = capture_one(ARGV[i]) end
return codes
