-- quarantine.lua: moves one job the host could not decode aside as a failed job whose
-- error says why, so a bad record cannot block its queue. The original value is renamed to
-- `<prefix>garbage:<id>`; the job key gets a failed record.
-- KEYS: the queue's ten keys (see lib.lua), then [11] the job key.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)  [5] the job id  [6] reason
-- Returns: { 'moved', reason as stored }, or { 'missing' } when the job key holds nothing.

local MOVED, MISSING = 'moved', 'missing'
if redis.call('EXISTS', KEYS[11]) == 0 then
  return { MISSING }
end
return { MOVED, quarantine(ARGV[5], ARGV[6], true) }
