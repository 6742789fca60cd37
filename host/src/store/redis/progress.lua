-- progress.lua: records progress on a job its worker still holds.
-- KEYS: the queue's ten keys (see lib.lua), then [11] the job key.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] lease owner  [6] percent (0..100)  [7] '1' when a message follows, else '0'
--       [8] message  [9] the job id
-- Returns: 'recorded', or 'not held' when the owner does not hold the job (or it has no
-- record).

local RECORDED, NOT_HELD = 'recorded', 'not held'
local id = ARGV[9]
local _, holder = lease_parts(redis.call('HGET', K_LEASES, id))
if holder ~= ARGV[5] then
  return NOT_HELD
end
local job = load(id)
if not job then
  return NOT_HELD
end
job.progress_percent = tonumber(ARGV[6])
job.progress_message = ARGV[7] == '1' and ARGV[8] or nil
job.updated_at = NOW
save(id, job)
return RECORDED
