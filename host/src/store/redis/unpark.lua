-- unpark.lua: wakes the jobs of one queue parked for a handler that was just loaded: each
-- one still scheduled becomes waiting now, ahead of the time it was parked until.
-- KEYS: the queue's ten keys (see lib.lua), then [11] the queue's `parked` hash (job id ->
-- the handler it waits for; settle.lua writes it).
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)  [5] the handler
--       [6] the queue's config defaults as JSON (see `use_defaults` in lib.lua), or ''
-- Returns: { woken, report }: how many jobs it woke, and `id, reason` pairs for broken
-- entries moved aside or dropped. Every park of the handler is forgotten, woken or not.
-- Publishes on the wake channel when it woke a job.

local K_PARKED, HANDLER = KEYS[11], ARGV[5]
local report, woken = {}, 0
use_defaults(ARGV[6])
local parked = redis.call('HGETALL', K_PARKED)
for i = 1, #parked, 2 do
  local id, handler = parked[i], parked[i + 1]
  if handler == HANDLER then
    redis.call('HDEL', K_PARKED, id)
    if redis.call('ZREM', K_SCHEDULED, id) == 1 then
      local job = take(id, 'scheduled', 'scheduled', report)
      if job then
        make_waiting(id, job, NOW)
        woken = woken + 1
      end
    end
  end
end
if woken > 0 then
  wake()
end
return { woken, report }
