-- claim.lua: claims up to N ready jobs of one queue for one worker, in one step.
-- KEYS: the queue's nine keys (see lib.lua); no job keys (ids come from the waiting set).
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] max jobs  [6] lease owner  [7] lease expiry (ms)  [8] most due jobs to promote
-- Returns: { claimed, report } where claimed is one HGETALL array per claimed job, in claim
-- order, and report is `id, reason` pairs for broken entries moved aside or dropped.
-- Due scheduled jobs are promoted to waiting first. A paused queue claims nothing.

local max, owner, expires = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local report, claimed = {}, {}
if redis.call('EXISTS', K_PAUSED) == 1 then
  return { claimed, report }
end
promote_due(tonumber(ARGV[8]), report)
while #claimed < max do
  local members = redis.call('ZRANGE', K_WAITING, 0, max - #claimed - 1)
  if #members == 0 then
    break
  end
  for _, member in ipairs(members) do
    redis.call('ZREM', K_WAITING, member)
    local id = member_id(member)
    if take(id, 'waiting', report) then
      local key = job_key(id)
      redis.call('HINCRBY', key, 'attempts', 1)
      redis.call('HSET', key, 'state', 'active', 'lease_owner', owner,
        'lease_expires_at', int(expires), 'claimed_at', int(NOW), 'updated_at', int(NOW))
      redis.call('ZADD', K_ACTIVE, expires, id)
      table.insert(claimed, redis.call('HGETALL', key))
    end
  end
end
return { claimed, report }
