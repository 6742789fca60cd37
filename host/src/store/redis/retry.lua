-- retry.lua: revives failed jobs: back to waiting at now, attempts reset, history kept.
-- KEYS: the queue's nine keys (see lib.lua), then [10] the job key when ARGV[5] is 'one'.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] 'one' or 'all'  [6] the job id when 'one'
-- Returns: { revived, '' }, or for 'one' { 0, state } when the job is not failed and
-- { 0, 'missing' } when there is no such job.

local function revive(id)
  local key = job_key(id)
  local job = fields(key)
  redis.call('ZREM', K_FAILED, id)
  redis.call('HDEL', key, 'finished_at', 'result', 'lease_owner', 'lease_expires_at')
  redis.call('HSET', key, 'attempts', '0', 'cancel_requested', '0')
  make_waiting(id, job, NOW)
  if job.unique_key then
    redis.call('HSETNX', K_UNIQUE, job.unique_key, id)
  end
end

local revived = 0
if ARGV[5] == 'one' then
  local id = ARGV[6]
  if redis.call('TYPE', KEYS[10])['ok'] ~= 'hash' then
    return { 0, 'missing' }
  end
  local state = redis.call('HGET', KEYS[10], 'state')
  if state ~= 'failed' then
    return { 0, state or 'missing' }
  end
  revive(id)
  revived = 1
else
  local report = {}
  for _, id in ipairs(redis.call('ZRANGE', K_FAILED, 0, -1)) do
    if take(id, 'failed', report) then
      revive(id)
      revived = revived + 1
    else
      redis.call('ZREM', K_FAILED, id)
    end
  end
end
if revived > 0 then
  wake()
end
return { revived, '' }
