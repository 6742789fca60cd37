-- claim.lua: claims up to N ready jobs of one queue for one worker, in one step.
-- KEYS: the queue's nine keys (see lib.lua); no job keys (ids come from the waiting set).
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] max jobs  [6] lease owner  [7] lease expiry (ms)  [8] most due jobs to promote
-- Returns: { fields, claimed, report } where fields names the job fields a claim returns,
-- claimed is one array of those fields' values (nil where unset) per claimed job, in claim
-- order, as they are after the claim, and report is `id, reason` pairs for broken entries
-- moved aside or dropped.
-- Due scheduled jobs are promoted to waiting first. A paused queue claims nothing.
-- A job whose hash looks sound here (state, id, queue, attempts) is claimed on that check
-- alone: the host decodes every field and moves aside one it cannot read.

local max, owner, expires = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
-- What a host needs of a claimed job (not its result, progress or finish time, which a
-- job being claimed does not have). The first 14 are read; the claim sets the last four.
-- Positions 1, 2, 3 and 7 are checked below.
local FIELDS = { 'id', 'queue', 'state', 'handler', 'payload', 'priority', 'attempts',
  'max_attempts', 'run_at', 'unique_key', 'cancel_requested', 'created_at', 'error', 'history',
  'updated_at', 'claimed_at', 'lease_owner', 'lease_expires_at' }
local READ = { unpack(FIELDS, 1, 14) }
local report, claimed, moves = {}, {}, new_moves()
if redis.call('EXISTS', K_PAUSED) == 1 then
  return { FIELDS, claimed, report }
end
promote_due(tonumber(ARGV[8]), report)
local lease_until = int(expires)
while #claimed < max do
  local popped = redis.call('ZPOPMIN', K_WAITING, max - #claimed)
  if #popped == 0 then
    break
  end
  for i = 1, #popped, 2 do
    local id = member_id(popped[i])
    local key = job_key(id)
    local job = redis.pcall('HMGET', key, unpack(READ))
    if job.err == nil and job[3] == 'waiting' and job[1] == id and job[2] == QUEUE
      and int_in(job[7], INT_FIELDS.attempts) then
      local attempts = int(tonumber(job[7]) + 1)
      redis.call('HSET', key, 'state', 'active', 'attempts', attempts, 'lease_owner', owner,
        'lease_expires_at', lease_until, 'claimed_at', NOW_TEXT, 'updated_at', NOW_TEXT)
      zadd(moves, K_ACTIVE, expires, lease_member(id, owner))
      job[3], job[7], job[15], job[16], job[17], job[18] =
        'active', attempts, NOW_TEXT, NOW_TEXT, owner, lease_until
      claimed[#claimed + 1] = job
    else
      -- Missing, not a hash, malformed or in another state: `take` says which and deals
      -- with it.
      take(id, 'waiting', report)
    end
  end
end
flush_moves(moves)
return { FIELDS, claimed, report }
