-- quarantine.lua: moves one job the host could not read aside as a failed job whose error
-- says why, so a bad record cannot block its queue. The original value is renamed to
-- `<prefix>garbage:<id>`; the job key gets a failed record. A job key that holds nothing
-- is not a job: its id is unlisted (removed from the state sets, its lease ended).
-- KEYS: the queue's ten keys (see lib.lua), then [11] the job key.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)  [5] the job id  [6] reason
--       (replaced by what the key holds when it is not a string)
-- Returns: { 'moved', reason as stored }, or { 'missing' } when the job key holds nothing.

local MOVED, MISSING = 'moved', 'missing'
local id, reason = ARGV[5], ARGV[6]
local _, kind = load(id)
if kind == 'none' then
  unlist(id, nil)
  return { MISSING }
end
if kind and kind ~= 'undecodable' then
  reason = unreadable(kind)
end
return { MOVED, quarantine(id, reason, true) }
