-- progress.lua: records progress on a job its worker still holds.
-- KEYS: the queue's nine keys (see lib.lua), then [10] the job key.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] lease owner  [6] percent (0..100)  [7] '1' when a message follows, else '0'
--       [8] message
-- Returns: 1 when recorded, 0 when the owner does not hold the job.

local key = KEYS[10]
if redis.call('TYPE', key)['ok'] ~= 'hash' then
  return 0
end
local held = redis.call('HMGET', key, 'state', 'lease_owner')
if held[1] ~= 'active' or held[2] ~= ARGV[5] then
  return 0
end
redis.call('HSET', key, 'progress_percent', ARGV[6], 'updated_at', NOW_TEXT)
if ARGV[7] == '1' then
  redis.call('HSET', key, 'progress_message', ARGV[8])
else
  redis.call('HDEL', key, 'progress_message')
end
return 1
