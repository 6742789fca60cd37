-- claim.lua: claims up to N ready jobs of one queue for one worker, in one step.
-- KEYS: the queue's nine keys (see lib.lua); no job keys (ids come from the waiting set).
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] max jobs  [6] lease owner  [7] lease expiry (ms)  [8] most due jobs to promote
-- Returns: { claimed, report } where claimed is one HGETALL array per claimed job, in claim
-- order, with the fields the claim changed appended (a reader keeps the last value of a
-- field), and report is `id, reason` pairs for broken entries moved aside or dropped.
-- Due scheduled jobs are promoted to waiting first. A paused queue claims nothing.
-- A job whose hash looks sound here (state, id, queue, attempts) is claimed on that check
-- alone: the host decodes every field and moves aside one it cannot read.

local max, owner, expires = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local report, claimed, moves = {}, {}, new_moves()
if redis.call('EXISTS', K_PAUSED) == 1 then
  return { claimed, report }
end
promote_due(tonumber(ARGV[8]), report)
local lease_until, now = int(expires), int(NOW)
while #claimed < max do
  local popped = redis.call('ZPOPMIN', K_WAITING, max - #claimed)
  if #popped == 0 then
    break
  end
  for i = 1, #popped, 2 do
    local id = member_id(popped[i])
    local key = job_key(id)
    local flat = redis.pcall('HGETALL', key)
    local job = flat.err == nil and as_table(flat) or nil
    if job and job.state == 'waiting' and job.id == id and job.queue == QUEUE
      and int_in(job.attempts, INT_FIELDS.attempts) then
      local attempts = int(tonumber(job.attempts) + 1)
      redis.call('HSET', key, 'state', 'active', 'attempts', attempts, 'lease_owner', owner,
        'lease_expires_at', lease_until, 'claimed_at', now, 'updated_at', now)
      zadd(moves, K_ACTIVE, expires, id)
      for _, value in ipairs({ 'state', 'active', 'attempts', attempts, 'lease_owner', owner,
        'lease_expires_at', lease_until, 'claimed_at', now, 'updated_at', now }) do
        flat[#flat + 1] = value
      end
      claimed[#claimed + 1] = flat
    else
      -- Missing, not a hash, malformed or in another state: `take` says which and deals
      -- with it.
      take(id, 'waiting', report)
    end
  end
end
flush_moves(moves)
return { claimed, report }
