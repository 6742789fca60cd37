-- recover.lua: the reaper for one queue. Takes back jobs whose lease expired (their host
-- died or stalled) and promotes due scheduled jobs to waiting.
-- KEYS: the queue's ten keys (see lib.lua); no job keys (ids come from the active set).
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] most expired leases to take back  [6] most due jobs to promote
-- Returns: { leases taken back, report } where report is `id, reason` pairs for broken
-- entries moved aside or dropped.
-- An expired job's attempt counts: it gets a `lost` attempt record and goes back to
-- waiting, or to failed when it has no attempts left (cancelled when a cancel was
-- requested).

local report, recovered, woke = {}, 0, false
local expired = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', '(' .. NOW_TEXT, 'WITHSCORES',
  'LIMIT', 0, tonumber(ARGV[5]))
for i = 1, #expired, 2 do
  local id, expires_at = expired[i], tonumber(expired[i + 1])
  local claimed_at, owner = lease_parts(redis.call('HGET', K_LEASES, id))
  unlease(nil, id)
  -- A claimed job's record says waiting; one without a lease was listed by mistake.
  local job = claimed_at and take(id, 'active', 'waiting', report)
  if job then
    recovered = recovered + 1
    local attempts = job.attempts + 1
    local message = 'lease held by `' .. owner .. '` expired at ' .. format_time(expires_at)
    local record = '{"attempt":' .. int(attempts) .. ',"digest":null,"started_at":'
      .. int(claimed_at) .. ',"ended_at":' .. NOW_TEXT .. ',"outcome":"lost","message":'
      .. cjson.encode(message) .. ',"wall_ms":' .. int(math.max(0, NOW - claimed_at))
      .. ',"fuel":null}'
    local history = appended(job.history, record)
    end_claim(job, attempts, owner, claimed_at)
    if job.cancel_requested then
      finish(nil, id, job, 'cancelled', nil, nil, history)
    elseif attempts >= job.max_attempts then
      finish(nil, id, job, 'failed', nil, 'lease expired after the last attempt', history)
    else
      job.history = history
      requeue(nil, id, job, NOW, message)
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
