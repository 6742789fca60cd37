-- claim.lua: claims up to N ready jobs of one queue for one worker, in one step.
-- KEYS: the queue's ten keys (see lib.lua); no job keys (ids come from the waiting set).
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] max jobs  [6] lease owner  [7] lease expiry (ms)  [8] most due jobs to promote
-- Returns: { claimed, report } where claimed holds an `{ id, record }` pair per claimed job,
-- in claim order, the record as stored (a claim does not rewrite it), and report is
-- `id, reason` pairs for broken entries moved aside or dropped.
-- Due scheduled jobs are promoted to waiting first. A paused queue claims nothing.
-- A claim lists each job in `active` (score: lease expiry) and `leases` (the claim time and
-- owner); the host reads the job as active, with one more attempt than its record says.
-- A record is claimed when its id, queue, state and attempts look right; the host decodes
-- every field and moves aside one it cannot read.

local max, owner, expires = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local report, claimed, moves = {}, {}, new_moves()
if redis.call('EXISTS', K_PAUSED) == 1 then
  return { claimed, report }
end
promote_due(tonumber(ARGV[8]), report)
local lease = lease_value(NOW, owner)
local active, leases = pending(moves.add, K_ACTIVE), {}
while #claimed < max do
  local popped = redis.call('ZPOPMIN', K_WAITING, max - #claimed)
  if #popped == 0 then
    break
  end
  local ids, keys = {}, {}
  for i = 1, #popped, 2 do
    local id = member_id(popped[i])
    ids[#ids + 1] = id
    keys[#keys + 1] = job_key(id)
  end
  local raws = redis.call('MGET', unpack(keys))
  for i, id in ipairs(ids) do
    local job = decode(raws[i])
    if job and job.state == 'waiting' and job.id == id and job.queue == QUEUE
      and int_in(job.attempts, INT_FIELDS.attempts) then
      claimed[#claimed + 1] = { id, raws[i] }
      active[#active + 1] = expires
      active[#active + 1] = id
      leases[#leases + 1] = id
      leases[#leases + 1] = lease
    else
      -- Missing, not a record, malformed or in another state: `take` says which and deals
      -- with it.
      take(id, 'waiting', 'waiting', report)
    end
  end
end
if #leases > 0 then
  redis.call('HSET', K_LEASES, unpack(leases))
end
flush_moves(moves)
return { claimed, report }
