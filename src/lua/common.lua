-- SPDX-License-Identifier: MIT
-- Helpers shared by every script (scripts/embed-lua.py prepends this file).
--
-- The scripts are where the bridge writes tinytown's data, so everything
-- here mirrors tinytown's own writers: the activity list (LPUSH, LTRIM 0 9,
-- EXPIRE 3600), the stop flag (SET 1 EX 3600), and events as XADD with
-- MAXLEN ~ 1000 on the town stream and ~ 100 on agent streams, with the
-- TownEvent JSON serialised field for field as serde does. Keys are
-- written KEY.<name>(town[, id]): scripts/embed-lua.py expands them from
-- include/tinytown_bridge/keys.def, as the C side's come (standalone Redis,
-- as tinytown itself requires).
--
-- Every script starts by looking up its command's idempotency record and,
-- if one exists, returns it untouched: a redelivered command changes nothing.
-- Every script takes the same three leading arguments: town, command id and
-- the idempotency bucket spec (see idem_spec below).
-- Otherwise it checks, writes, and stores its outcome as a "payload" (a list
-- of netstrings) from which the bridge renders the result record; the same
-- payload always renders to the same bytes.

local STATE_TITLE = {
  cold = 'Cold', starting = 'Starting', idle = 'Idle', working = 'Working',
  paused = 'Paused', draining = 'Draining', stopped = 'Stopped', error = 'Error',
}
local TERMINAL = { cold = true, stopped = true, error = true }

-- Activity lines, byte for byte as tinytown writes them.
local ACT_STOP = '\240\159\155\145 Stop requested'
local ACT_INTERRUPT = '\226\143\184\239\184\143 Interrupted (paused)'
local ACT_RESUME = '\226\150\182\239\184\143 Resumed'
local ACT_CLOSE = '\240\159\148\187 Closing (draining then stop)'

-- tinytown reads a missing or unknown state as "starting".
local function norm_state(raw)
  if raw and STATE_TITLE[raw] then return raw end
  return 'starting'
end

-- serde_json's string escaping: quote, backslash and C0 controls only.
local JSON_ESC = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}
local function json_str(s)
  -- Most strings need no escape: find is far cheaper than gsub.
  if not string.find(s, '[%z\1-\31"\\]') then return '"' .. s .. '"' end
  local escaped = string.gsub(s, '[%z\1-\31"\\]', function(c)
    return JSON_ESC[c] or string.format('\\u%04x', string.byte(c))
  end)
  return '"' .. escaped .. '"'
end

-- A TownEvent with tinytown's member order; absent members are omitted.
local function event_json(ev)
  local t = { '{"event_type":', json_str(ev.type) }
  local function add(name, v)
    if v then t[#t + 1] = ',"' .. name .. '":' .. json_str(v) end
  end
  add('agent_id', ev.agent_id)
  add('old_state', ev.old)
  add('new_state', ev.new)
  t[#t + 1] = ',"message":' .. json_str(ev.message)
  t[#t + 1] = ',"timestamp":' .. json_str(ev.ts)
  add('parent_agent_id', ev.parent)
  add('spawn_mode', ev.spawn_mode)
  t[#t + 1] = '}'
  return table.concat(t)
end

-- Stream ids "<ms>-<seq>" compared as the numbers they are (decimal, no
-- leading zeros: the shorter string is the smaller number).
local function num_cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local function id_cmp(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  local c = num_cmp(am, bm)
  if c ~= 0 then return c end
  return num_cmp(as, bs)
end

-- The smallest id after `id`, or nil for ids too large for Lua's numbers
-- (only explicit ids near 2^64 get there; tinytown and the bridge use "*").
local function id_next(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if #seq < 15 then return ms .. '-' .. string.format('%.0f', tonumber(seq) + 1) end
  if #ms < 15 then return string.format('%.0f', tonumber(ms) + 1) .. '-0' end
  return nil
end

-- A stream's XINFO STREAM as a table, or nil when the key holds no stream.
local function stream_info(key)
  if redis.call('TYPE', key).ok ~= 'stream' then return nil end
  local flat = redis.call('XINFO', 'STREAM', key)
  local info = {}
  for i = 1, #flat, 2 do info[flat[i]] = flat[i + 1] end
  return info
end

-- The bridge's outbox (docs/events.md): every event a script of the bridge
-- writes goes to tinytown's streams exactly as tinytown writes it, and to
-- `ttb:{town}:outbox` under the same entry id, with its ordinal in
-- tt:{town}:events (entries-added when it was added) as a third field.
-- tinytown's MAXLEN trims its stream to about 1,000 entries, so a burst
-- larger than that would reach Kafka only in part; the outbox is trimmed by
-- the relay, only up to what Kafka acknowledged. Its cap only guards Redis's
-- memory when no relay runs for a long time (about 300 bytes an entry); a
-- burst that overflows it is reported by the relay as a gap.
local OUTBOX_MAXLEN = '1000000'

local function xadd(key, maxlen, id, ev_type, data)
  return redis.call('XADD', key, 'MAXLEN', '~', maxlen, id, 'event_type', ev_type, 'data', data)
end

-- Per town, for this run of the script: the ordinal of the last entry of
-- tt:{town}:events, and the id the next event gets there. Nothing else
-- writes while a script runs, so one look per script is enough.
local EMITTING = {}

-- `ttb:{town}:emitted` (a hash) remembers the id and ordinal of the last
-- event a bridge script wrote. While that entry is still the newest of
-- tt:{town}:events, nobody has added to the stream since (an entry is only
-- ever added after the newest, and MAXLEN trims the oldest), so the next
-- ordinal is one more and the next id "*" is past the outbox's last: one
-- HMGET and one XRANGE from the mark instead of XINFO STREAM on both
-- streams, which costs a fifth of a transition. Otherwise (tinytown wrote
-- since, a reset, a first run), both streams are asked.

local function emit_state_slow(town)
  local events = stream_info(KEY.events(town))
  local outbox = stream_info(KEY.outbox(town))
  local st = { ord = events and tonumber(events['entries-added']) or 0, id = '*' }
  -- The outbox uses the ids of tt:{town}:events, which must therefore keep
  -- growing. They do, unless that stream was deleted and recreated (by a
  -- reset) in the same millisecond or after the clock went back: then the
  -- next id is chosen here, just after the outbox's last one.
  if outbox then
    local last = outbox['last-generated-id']
    if not events or id_cmp(events['last-generated-id'], last) < 0 then
      st.id = id_next(last) or '*'
    end
  end
  return st
end

local function emit_state(town)
  local st = EMITTING[town]
  if st then return st end
  local mark = redis.call('HMGET', KEY.emitted(town), 'id', 'ord')
  if mark[1] and mark[2] then
    local from = redis.call('XRANGE', KEY.events(town), mark[1], '+', 'COUNT', 2)
    if #from == 1 and from[1][1] == mark[1] then st = { ord = tonumber(mark[2]), id = '*' } end
  end
  st = st or emit_state_slow(town)
  EMITTING[town] = st
  return st
end

local function emit(town, ev)
  local data = event_json(ev)
  local st = emit_state(town)
  local id = xadd(KEY.events(town), '1000', st.id, ev.type, data)
  st.id = '*'
  st.ord = st.ord + 1
  local ord = string.format('%.0f', st.ord)
  redis.call('XADD', KEY.outbox(town), 'MAXLEN', '~', OUTBOX_MAXLEN, id, 'event_type', ev.type,
             'data', data, 'ord', ord)
  redis.call('HSET', KEY.emitted(town), 'id', id, 'ord', ord)
  if ev.agent_id then xadd(KEY.agent_events(town, ev.agent_id), '100', '*', ev.type, data) end
  if ev.parent and ev.parent ~= ev.agent_id then
    xadd(KEY.agent_events(town, ev.parent), '100', '*', ev.type, data)
  end
end

local function activity(town, id, line)
  local key = KEY.activity(town, id)
  redis.call('LPUSH', key, line)
  redis.call('LTRIM', key, 0, 9)
  redis.call('EXPIRE', key, 3600)
end

-- The bridge's record of the last state it knows for each agent; state
-- capture compares against it, so the bridge's own changes are not reported
-- a second time as foreign ones.
local function observe(town, id, state)
  if state then
    redis.call('HSET', KEY.observed(town), id, state)
  else
    redis.call('HDEL', KEY.observed(town), id)
  end
end

local function hash_get(flat, field)
  for i = 1, #flat, 2 do
    if flat[i] == field then return flat[i + 1] end
  end
  return nil
end

-- Request a stop the way tinytown's kill does, plus the event it lacks.
local function kill_agent(town, id, state, ts)
  redis.call('SET', KEY.stop(town, id), '1', 'EX', 3600)
  redis.call('HSET', KEY.agent(town, id), 'state', 'stopped')
  activity(town, id, ACT_STOP)
  emit(town, { type = 'agent_stopped', agent_id = id, old = STATE_TITLE[state],
               new = 'Stopped', message = 'Agent stop requested', ts = ts })
  observe(town, id, 'stopped')
end

local function ns(s) return #s .. ':' .. s .. ',' end

-- The stored outcome: "P", a format version, op, code, message, applied_at,
-- (version 2: a listing page's "more" flag and "next" cursor), then the
-- agents (each a flat HGETALL array) as netstrings.
local function payload(op, code, msg, ts, agents, page)
  local t = { 'P', ns('1'), ns(op), ns(code), ns(msg), ns(ts) }
  if page then
    t[2] = ns('2')
    t[#t + 1] = ns(page.more)
    t[#t + 1] = ns(page.next)
  end
  t[#t + 1] = ns(tostring(#agents))
  for _, h in ipairs(agents) do
    t[#t + 1] = ns(tostring(#h))
    for _, v in ipairs(h) do t[#t + 1] = ns(v) end
  end
  return table.concat(t)
end

-- Idempotency records: one hash per town, `ttb:{town}:cmds` (field =
-- command id, value = the stored outcome), and beside it a sorted set
-- `ttb:{town}:cmds:expiry` (member = command id, score = when the record may
-- go). A lookup is one HGET whatever the retention, so bridges configured
-- with different retentions still see each other's records, and changing
-- the retention never hides a record. Every write also removes a few
-- expired records, so the hash shrinks as fast as it grows. (Never a key
-- per command: a town's SCAN walks every key of the database.) The bridge
-- passes "now expire_at" in seconds: time is an argument, as ever.
local function type_of(key)
  return redis.call('TYPE', key).ok
end

-- Nil when each key (a flat list: key, type, key, type ...) is absent or of
-- its type, else a message naming the first that is not. Scripts check every
-- key they may write before their first write: Redis does not undo a
-- script's writes when a later command of it fails.
local function wrong_type(checks)
  for i = 1, #checks, 2 do
    local t = type_of(checks[i])
    if t ~= 'none' and t ~= checks[i + 1] then
      return checks[i] .. ' holds a ' .. t .. ', not a ' .. checks[i + 1]
    end
  end
  return nil
end

-- A town's idempotency records, checked once per script: where and when.
local function idem_town(town, spec)
  local now, exp = string.match(spec, '^(%d+) (%d+)$')
  local keys = { town = town, now = now, expire = exp,
                 hash = KEY.cmds(town), zset = KEY.cmds_expiry(town) }
  local bad = wrong_type({ keys.hash, 'hash', keys.zset, 'zset' })
  -- Nowhere to keep an outcome: refuse before anything is written.
  if bad then error({ err = 'ERR ' .. bad }) end
  return keys
end

-- One command's record in them.
local function idem_for(keys, id)
  return { town = keys.town, id = id, now = keys.now, expire = keys.expire,
           hash = keys.hash, zset = keys.zset }
end

local function idem_spec(town, id, spec)
  return idem_for(idem_town(town, spec), id)
end

local function idem_get(idem)
  return redis.call('HGET', idem.hash, idem.id)
end

local function idem_put(idem, value)
  redis.call('HSET', idem.hash, idem.id, value)
  redis.call('ZADD', idem.zset, idem.expire, idem.id)
  local old = redis.call('ZRANGEBYSCORE', idem.zset, '-inf', idem.now, 'LIMIT', 0, 16)
  if #old > 0 then
    redis.call('HDEL', idem.hash, unpack(old))
    redis.call('ZREM', idem.zset, unpack(old))
  end
end

local function finish(idem, op, code, msg, ts, agents, page)
  local p = payload(op, code, msg, ts, agents, page)
  idem_put(idem, p)
  return p
end

-- The keys a change of one agent writes (its hash, activity list and event
-- stream) and the town's keys every change writes, with their types.
local function agent_keys(town, id)
  return { KEY.agent(town, id), 'hash', KEY.activity(town, id), 'list',
           KEY.agent_events(town, id), 'stream' }
end

local function town_keys(town)
  return { KEY.events(town), 'stream', KEY.outbox(town), 'stream', KEY.emitted(town), 'hash',
           KEY.observed(town), 'hash', KEY.names(town), 'hash' }
end

local function concat(...)
  local out = {}
  for _, list in ipairs({ ... }) do
    for _, v in ipairs(list) do out[#out + 1] = v end
  end
  return out
end

-- Whether agent `id` still is what the bridge's directory saw when it
-- resolved a reference to it (src/directory.c): ARGV[at] is "1" followed by
-- the name, nickname and role_id it saw, or "0" when the reference was the
-- id itself. When it is not (renamed, deleted, recreated), the script does
-- nothing and answers STALE; the bridge reads the agent again and resolves
-- the reference anew, so a directory entry that went out of date can never
-- make a command act on another agent than the one the reference names.
local function seen_matches(fields, at)
  if ARGV[at] ~= '1' then return true end
  if not fields then return false end
  return (fields[1] or '') == ARGV[at + 1] and (fields[2] or '') == ARGV[at + 2] and
         (fields[3] or '') == ARGV[at + 3]
end

local function as_seen(town, id, at)
  if ARGV[at] ~= '1' then return true end
  local akey = KEY.agent(town, id)
  if type_of(akey) ~= 'hash' then return false end
  return seen_matches(redis.call('HMGET', akey, 'name', 'nickname', 'role_id'), at)
end

local STALE = { ok = 'STALE' }

local function unreadable(akey, id)
  return 'agent ' .. id .. ' has no record tinytown can read (the hash ' .. akey ..
         ' lacks a matching id field)'
end

-- The agent behind a key, as a reader of tinytown's sees it: "none" when
-- there is no key, "hash" when it is a hash whose id field is the id, else a
-- message saying why tinytown would not read it as that agent.
local function agent_status(town, id)
  local akey = KEY.agent(town, id)
  local t = type_of(akey)
  if t == 'none' then return 'none' end
  if t ~= 'hash' then return akey .. ' holds a ' .. t .. ', not a hash' end
  if redis.call('HGET', akey, 'id') ~= id then return unreadable(akey, id) end
  return 'hash'
end
