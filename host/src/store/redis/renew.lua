-- renew.lua: extends one worker's leases on a batch of jobs of one queue.
-- KEYS: the queue's nine keys (see lib.lua), then [10..] one job key per id.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] lease owner  [6] new lease expiry (ms)  [7..] the job ids, matching KEYS[10..]
-- Returns: one code per id: 0 lease lost (not active under this owner), 1 renewed,
-- 2 renewed but an admin requested a cancel.

local owner, expires = ARGV[5], tonumber(ARGV[6])
local codes = {}
for i = 7, #ARGV do
  local id, key = ARGV[i], KEYS[i + 3]
  local code = 0
  if redis.call('TYPE', key)['ok'] == 'hash' then
    local held = redis.call('HMGET', key, 'state', 'lease_owner', 'cancel_requested')
    if held[1] == 'active' and held[2] == owner then
      redis.call('HSET', key, 'lease_expires_at', int(expires))
      redis.call('ZADD', K_ACTIVE, expires, lease_member(id, owner))
      code = held[3] == '1' and 2 or 1
    end
  end
  table.insert(codes, code)
end
return codes
