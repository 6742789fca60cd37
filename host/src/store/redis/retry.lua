-- retry.lua: revives failed jobs: back to waiting at now, attempts reset, history kept.
-- KEYS: the queue's ten keys (see lib.lua), then [11] the job key when ARGV[5] is 'one'.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] 'one' or 'all'  [6] the job id when 'one'
-- Returns: { 'revived', count }, or for 'one' { 'not failed', state } when the job is in
-- another state and { 'missing' } when there is no such job.

local REVIVED, NOT_FAILED, MISSING = 'revived', 'not failed', 'missing'
local function revive(id, job)
  redis.call('ZREM', K_FAILED, id)
  job.finished_at, job.result, job.lease_owner, job.claimed_at = nil, nil, nil, nil
  job.attempts, job.cancel_requested = 0, false
  make_waiting(id, job, NOW)
  if job.unique_key then
    redis.call('HSETNX', K_UNIQUE, job.unique_key, id)
  end
end

local revived = 0
if ARGV[5] == 'one' then
  local id = ARGV[6]
  local job = load(id)
  if not job then
    return { MISSING }
  end
  if job.state ~= 'failed' then
    return { NOT_FAILED, tostring(job.state) }
  end
  local _, reasons = problems(job, id)
  if #reasons > 0 then
    return redis.error_reply('kiln: job `' .. id .. '` cannot be retried: '
      .. table.concat(reasons, '; '))
  end
  revive(id, job)
  revived = 1
else
  local report = {}
  for _, id in ipairs(redis.call('ZRANGE', K_FAILED, 0, -1)) do
    local job = take(id, 'failed', 'failed', report)
    if job then
      revive(id, job)
      revived = revived + 1
    else
      -- Dropped or unlisted; a record moved aside is a failed job again and stays listed.
      local left = load(id)
      if not left or left.state ~= 'failed' then
        redis.call('ZREM', K_FAILED, id)
      end
    end
  end
end
if revived > 0 then
  wake()
end
return { REVIVED, revived }
