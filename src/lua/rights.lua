-- SPDX-License-Identifier: MIT
-- Does the connection's ACL user have every right the bridge's scripts use?
-- ARGV: the towns. Returns "" when it does, else the first refused call as
-- "COMMAND key".
--
-- Redis does not roll back a script that stops half-way, and a call the
-- ACL refuses stops it: a script with a right missing could leave a command
-- half-applied. So the bridge asks here, where nothing is written, on every
-- connect, and names the missing right before any command runs. The calls
-- are those of the scripts (common.lua and the rest), each on a key of both
-- namespaces of every town, the way the README's ACL line grants them.
local calls = {
  {'GET', 'k'}, {'SET', 'k', 'v'}, {'DEL', 'k'}, {'EXISTS', 'k'}, {'TYPE', 'k'}, {'TTL', 'k'},
  {'EXPIRE', 'k', '1'}, {'PEXPIRE', 'k', '1'},
  {'HGET', 'k', 'f'}, {'HMGET', 'k', 'f'}, {'HGETALL', 'k'}, {'HSET', 'k', 'f', 'v'},
  {'HSETNX', 'k', 'f', 'v'}, {'HDEL', 'k', 'f'},
  {'LPUSH', 'k', 'v'}, {'LTRIM', 'k', '0', '1'},
  {'ZADD', 'k', '1', 'm'}, {'ZREM', 'k', 'm'}, {'ZRANGEBYSCORE', 'k', '0', '1'},
  {'XADD', 'k', '*', 'f', 'v'}, {'XRANGE', 'k', '-', '+'}, {'XTRIM', 'k', 'MAXLEN', '1'},
  {'XINFO', 'STREAM', 'k'},
}
if not redis.acl_check_cmd then return '' end -- before Redis 7.0: nothing to ask
for _, town in ipairs(ARGV) do
  for _, ns in ipairs({'tt:', 'ttb:'}) do
    local key = ns .. town .. ':rights'
    for _, call in ipairs(calls) do
      local args = {}
      for i, a in ipairs(call) do args[i] = (a == 'k') and key or a end
      if not redis.acl_check_cmd(unpack(args)) then return call[1] .. ' ' .. key end
    end
  end
end
return ''
