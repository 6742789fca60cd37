-- renew.lua: extends one worker's leases on a batch of jobs of one queue.
-- KEYS: the queue's ten keys (see lib.lua), then [11..] one job key per id.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] lease owner  [6] new lease expiry (ms)  [7..] the job ids, matching KEYS[11..]
-- Returns: one code per id: 'lost' (not active under this owner), 'held' (renewed), or
-- 'cancel requested' (renewed, and an admin requested a cancel).

local LOST, HELD, CANCEL_REQUESTED = 'lost', 'held', 'cancel requested'
local owner, expires = ARGV[5], ARGV[6]
local ids = { unpack(ARGV, 7) }
if #ids == 0 then
  return {}
end
local held = redis.call('HMGET', K_LEASES, unpack(ids))
local raws = redis.call('MGET', unpack(KEYS, 11, 10 + #ids))
local codes, renewed = {}, {}
for i, id in ipairs(ids) do
  local _, holder = lease_parts(held[i])
  local code = LOST
  if holder == owner then
    renewed[#renewed + 1] = expires
    renewed[#renewed + 1] = id
    local job = decode(raws[i])
    code = job and job.cancel_requested == true and CANCEL_REQUESTED or HELD
  end
  codes[i] = code
end
if #renewed > 0 then
  redis.call('ZADD', K_ACTIVE, unpack(renewed))
end
return codes
