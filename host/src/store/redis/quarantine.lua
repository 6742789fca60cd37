-- quarantine.lua: moves one job the host could not decode aside as a failed job whose
-- error says why, so a bad record cannot block its queue. The original hash is renamed to
-- `<prefix>garbage:<id>`; the job key gets a fresh failed job.
-- KEYS: the queue's nine keys (see lib.lua), then [10] the job key.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)  [5] the job id  [6] reason
-- Returns: the reason as stored.

if redis.call('TYPE', KEYS[10])['ok'] == 'none' then
  return ARGV[6]
end
return quarantine(ARGV[5], ARGV[6], true)
