-- settle.lua: applies a batch of settlements to jobs of one queue, in one step.
-- KEYS: the queue's nine keys (see lib.lua), then [10..] one job key per settlement.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua), then 6 per settlement:
--       id, lease owner, action (succeed | retry | fail | cancel | release),
--       at (ms; retry and release, else ''), text (result bytes for succeed, error for
--       retry and fail, else ''), attempt record as JSON ('' for none; ignored for release)
-- Returns: the ids not applied because the job is not active under that owner (stale).
-- Publishes on the wake channel when a job went back to waiting or scheduled.
-- Retry becomes fail when no attempts are left; retry and release become cancel when a
-- cancel was requested. Release takes the attempt back.

local stale, woke = {}, false
local n = (#ARGV - 4) / 6
for i = 0, n - 1 do
  local a = 5 + i * 6
  local id, owner, action = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local at, text, record = tonumber(ARGV[a + 3]), ARGV[a + 4], ARGV[a + 5]
  local key = KEYS[10 + i]
  local job = nil
  if redis.call('TYPE', key)['ok'] == 'hash' then
    job = fields(key)
  end
  if not job or job.state ~= 'active' or job.lease_owner ~= owner then
    table.insert(stale, id)
  else
    local cancelled = job.cancel_requested == '1'
    local attempts, max_attempts = tonumber(job.attempts), tonumber(job.max_attempts)
    if action ~= 'release' then
      append_history(key, record)
    end
    if action == 'succeed' then
      finish(id, job, 'succeeded', text, nil)
    elseif action == 'fail' then
      finish(id, job, 'failed', nil, text)
    elseif action == 'cancel' or ((action == 'retry' or action == 'release') and cancelled) then
      finish(id, job, 'cancelled', nil, nil)
    elseif action == 'retry' and attempts >= max_attempts then
      finish(id, job, 'failed', nil, text)
    elseif action == 'retry' then
      requeue(id, job, at, text, false)
      woke = true
    elseif action == 'release' then
      requeue(id, job, at, nil, true)
      woke = true
    else
      return redis.error_reply('kiln: unknown settle action `' .. action .. '`')
    end
  end
end
if woke then
  wake()
end
return stale
