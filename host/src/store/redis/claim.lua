-- claim.lua: claims up to N ready jobs of one queue for one worker, in one step.
-- KEYS: the queue's ten keys (see lib.lua); no job keys (ids come from the waiting set).
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] max jobs  [6] lease owner  [7] lease expiry (ms)  [8] most due jobs to promote
--       [9] the queue's config defaults as JSON (see `use_defaults` in lib.lua), or ''
-- Returns: { claimed, report } where claimed holds an `{ id, record }` pair per claimed job,
-- in claim order, the record as stored (a claim does not rewrite it), and report is
-- `id, reason` pairs for broken entries moved aside or dropped.
-- Due scheduled jobs are promoted to waiting first, a record left without priority or
-- max_attempts taking the config's (ARGV[9]). A paused queue claims nothing.
-- A claim lists each job in `active` (score: lease expiry) and `leases` (the claim time and
-- owner); the host reads the job as active, with one more attempt than its record says.
-- A record is claimed when it is a string holding the bytes of `state: 'waiting'` (no
-- MessagePack is decoded here); the host decodes every claimed record and moves aside one
-- that it cannot read or that is not a waiting job of this queue with this id.

-- What every waiting record contains: the MessagePack strings `state` and `waiting`.
local WAITING = '\165state\167waiting'
local max, owner, expires = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local report, claimed, moves = {}, {}, new_moves()
if redis.call('EXISTS', K_PAUSED) == 1 then
  return { claimed, report }
end
use_defaults(ARGV[9])
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
    local raw = raws[i]
    if type(raw) == 'string' and string.find(raw, WAITING, 1, true) then
      claimed[#claimed + 1] = { id, raw }
      active[#active + 1] = expires
      active[#active + 1] = id
      leases[#leases + 1] = id
      leases[#leases + 1] = lease
    else
      -- Missing, not a string, or not waiting: `take` says which and deals with it.
      take(id, 'waiting', 'waiting', report)
    end
  end
end
if #leases > 0 then
  redis.call('HSET', K_LEASES, unpack(leases))
end
flush_moves(moves)
return { claimed, report }
