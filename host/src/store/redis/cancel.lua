-- cancel.lua: cancels one job: at once when scheduled or waiting, by request when active.
-- KEYS: the queue's nine keys (see lib.lua), then [10] the job key.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)  [5] the job id
-- Returns: 'cancelled now', 'requested', 'missing', or the finished state it already had.

local id, key = ARGV[5], KEYS[10]
if redis.call('TYPE', key)['ok'] ~= 'hash' then
  return 'missing'
end
local job = fields(key)
if job.state == 'scheduled' or job.state == 'waiting' then
  unlist(id, job)
  redis.call('HSET', key, 'state', 'cancelled', 'updated_at', NOW_TEXT, 'finished_at', NOW_TEXT)
  redis.call('ZADD', K_CANCELLED, NOW, id)
  release_unique(job, id)
  return 'cancelled now'
end
if job.state == 'active' then
  redis.call('HSET', key, 'cancel_requested', '1', 'updated_at', NOW_TEXT)
  return 'requested'
end
return job.state
