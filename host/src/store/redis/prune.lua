-- prune.lua: deletes finished jobs of one queue beyond a retention policy.
-- KEYS: the queue's ten keys (see lib.lua); no job keys (ids come from the finished sets).
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua), then for succeeded, failed
--       and cancelled in turn: cutoff (delete jobs finished before it, ms; '' for none).
--       Retention by count is turned into a cutoff by the caller, so a job that finishes
--       while the count is taken is never deleted.
-- Returns: how many jobs were deleted.

local deleted = 0
local function drop(set, ids)
  for _, id in ipairs(ids) do
    redis.call('DEL', job_key(id))
    redis.call('ZREM', set, id)
    redis.call('ZREM', K_ALL, id)
    deleted = deleted + 1
  end
end
for i, set in ipairs({ K_SUCCEEDED, K_FAILED, K_CANCELLED }) do
  local cutoff = ARGV[4 + i]
  if cutoff ~= '' then
    drop(set, redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. cutoff))
  end
end
return deleted
