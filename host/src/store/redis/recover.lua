-- recover.lua: the reaper for one queue. Takes back jobs whose lease expired (their host
-- died or stalled) and promotes due scheduled jobs to waiting.
-- KEYS: the queue's nine keys (see lib.lua); no job keys (ids come from the active set).
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] most expired leases to take back  [6] most due jobs to promote
-- Returns: { leases taken back, report } where report is `id, reason` pairs for broken
-- entries moved aside or dropped.
-- An expired job gets a `lost` attempt record and goes back to waiting, or to failed when it
-- has no attempts left (cancelled when a cancel was requested).

local report, recovered, woke = {}, 0, false
local expired = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', '(' .. NOW_TEXT, 'LIMIT', 0,
  tonumber(ARGV[5]))
for _, member in ipairs(expired) do
  redis.call('ZREM', K_ACTIVE, member)
  local id, owner = lease_parts(member)
  local job = take(id, 'active', report)
  if job and job.lease_owner ~= owner then
    -- A lease left behind for a job that another claim holds now: unlisting it is all.
    job = nil
  end
  if job then
    recovered = recovered + 1
    local attempts, max_attempts = tonumber(job.attempts), tonumber(job.max_attempts)
    local expires_at = tonumber(job.lease_expires_at) or NOW
    local started = tonumber(job.claimed_at) or expires_at
    local message = 'lease held by `' .. (job.lease_owner or 'unknown') .. '` expired at '
      .. format_time(expires_at)
    local record = '{"attempt":' .. int(attempts) .. ',"digest":null,"started_at":'
      .. int(started) .. ',"ended_at":' .. NOW_TEXT .. ',"outcome":"lost","message":'
      .. cjson.encode(message) .. ',"wall_ms":' .. int(math.max(0, NOW - started))
      .. ',"fuel":null}'
    append_history(job_key(id), record)
    if job.cancel_requested == '1' then
      finish(id, job, 'cancelled', nil, nil)
    elseif attempts >= max_attempts then
      finish(id, job, 'failed', nil, 'lease expired after the last attempt')
    else
      requeue(id, job, NOW, message, false)
      woke = true
    end
  end
end
if promote_due(tonumber(ARGV[6]), report) > 0 then
  woke = true
end
if woke then
  wake()
end
return { recovered, report }
