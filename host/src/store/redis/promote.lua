-- promote.lua: moves the due scheduled jobs of one queue (delayed jobs and retries whose
-- run_at has come) to waiting, so counts stay truthful and idle hosts wake.
-- KEYS: the queue's ten keys (see lib.lua); no job keys (ids come from the scheduled set).
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)  [5] most due jobs to move
--       [6] the queue's config defaults as JSON (see `use_defaults` in lib.lua), or ''
-- A record left without priority or max_attempts takes the config's as it is promoted.
-- Returns: { taken, report }: how many due ids it took off `scheduled` (promoted, or
-- dropped when broken), and `id, reason` pairs for broken entries moved aside or dropped.
-- Publishes on the wake channel when it promoted a job.

local report = {}
use_defaults(ARGV[6])
local promoted, taken = promote_due(tonumber(ARGV[5]), report)
if promoted > 0 then
  wake()
end
return { taken, report }
