-- clear.lua: deletes the waiting and scheduled jobs of one queue.
-- KEYS: the queue's ten keys (see lib.lua); no job keys (ids come from the two sets).
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
-- Returns: how many jobs were deleted.

local deleted = 0
local function drop(id)
  local job, kind = load(id)
  if job then
    release_unique(job, id)
  end
  if kind ~= 'none' then
    deleted = deleted + 1
  end
  redis.call('DEL', job_key(id))
  redis.call('ZREM', K_ALL, id)
end
for _, member in ipairs(redis.call('ZRANGE', K_WAITING, 0, -1)) do
  drop(member_id(member))
end
for _, id in ipairs(redis.call('ZRANGE', K_SCHEDULED, 0, -1)) do
  drop(id)
end
redis.call('DEL', K_WAITING, K_SCHEDULED)
return deleted
