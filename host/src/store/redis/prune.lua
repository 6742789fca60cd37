-- prune.lua: deletes finished jobs of one queue beyond a retention policy.
-- KEYS: the queue's nine keys (see lib.lua); no job keys (ids come from the finished sets).
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua), then for succeeded, failed
--       and cancelled in turn: cutoff (delete jobs finished before it, ms; '' for none) and
--       keep (keep at most this many, the most recently finished; '' for no limit).
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
  local cutoff, keep = ARGV[3 + i * 2], ARGV[4 + i * 2]
  if cutoff ~= '' then
    drop(set, redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. cutoff))
  end
  if keep ~= '' then
    local excess = redis.call('ZCARD', set) - tonumber(keep)
    if excess > 0 then
      drop(set, redis.call('ZRANGE', set, 0, excess - 1))
    end
  end
end
return deleted
