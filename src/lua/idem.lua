-- SPDX-License-Identifier: MIT
-- Idempotency records of commands that run no script of their own (reads,
-- waits, references that did not resolve), a whole batch per call.
-- ARGV: mode, idempotency spec, then
--   mode "get": town, id pairs        -> per pair the stored record or false
--   mode "put": town, id, value triples -> per triple the record stored
--     before (another bridge was first: the caller answers with it) or
--     false when ours was stored.
--   Either way "E" + a message when the town's records cannot be kept (a
--   key of the wrong type): that command's problem, not the batch's.
local mode, spec = ARGV[1], ARGV[2]
local out = {}
local step = mode == 'get' and 2 or 3
for i = 3, #ARGV, step do
  local usable, idem = pcall(idem_spec, ARGV[i], ARGV[i + 1], spec)
  if usable then
    local prev = idem_get(idem)
    if mode == 'put' and not prev then idem_put(idem, ARGV[i + 2]) end
    out[#out + 1] = prev or false
  else
    out[#out + 1] = 'E' .. string.gsub(idem.err, '^ERR ', '')
  end
end
return out
