-- cancel.lua: cancels one job: at once when scheduled or waiting, by request when active.
-- KEYS: the queue's ten keys (see lib.lua), then [11] the job key.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)  [5] the job id
-- Returns: { 'cancelled' } (it was scheduled or waiting), { 'requested' } (it is active; its
-- worker is told at its next renewal), { 'missing' }, or { 'finished', state } with the
-- finished state it already had.

local CANCELLED, REQUESTED, MISSING, FINISHED = 'cancelled', 'requested', 'missing', 'finished'
local id = ARGV[5]
local job = load(id)
if not job then
  return { MISSING }
end
if redis.call('HEXISTS', K_LEASES, id) == 1 then
  job.cancel_requested, job.updated_at = true, NOW
  save(id, job)
  return { REQUESTED }
end
if job.state == 'scheduled' or job.state == 'waiting' then
  unlist(id, job)
  job.state, job.updated_at, job.finished_at = 'cancelled', NOW, NOW
  save(id, job)
  redis.call('ZADD', K_CANCELLED, NOW, id)
  release_unique(job, id)
  return { CANCELLED }
end
return { FINISHED, tostring(job.state) }
