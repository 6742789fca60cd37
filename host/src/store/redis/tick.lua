-- tick.lua: enqueues the job of one schedule tick, unless the schedule's cursor is already
-- at or past the tick (a cron tick is enqueued once, however many hosts try and however long
-- ago its job finished). The schedule's record lives in its queue's slot, in the
-- `schedules` hash, as three fields per schedule: `cursor:NAME` (the latest cron tick
-- enqueued, ms), `tick:NAME` (the latest tick, cron or manual) and `job:NAME` (its job id).
-- KEYS: the 10 queue keys (see lib.lua), [11] the job key `<prefix>job:<id>`,
--       [12] the queue's schedules hash `<prefix>schedules`.
-- ARGV: [1..4] as in lib.lua, [5] job id, [6] handler, [7] payload, [8] priority,
--       [9] max_attempts, [10] schedule name, [11] tick (ms), [12] '1' for a manual tick
--       (always enqueued; the cursor stays) else '0'.
-- Returns: the job id and 0 when it enqueued the job, or '' and 1 when the tick was
-- already enqueued (nothing is written): the cursor is at or past it, or its job (whose id
-- is derived from the schedule and the tick) still exists, as after the schedule moved here
-- from another queue.

local K_SCHEDULES = KEYS[12]
local id, handler, payload = ARGV[5], ARGV[6], ARGV[7]
local priority, max_attempts = tonumber(ARGV[8]), tonumber(ARGV[9])
local name, tick, manual = ARGV[10], tonumber(ARGV[11]), ARGV[12] == '1'

if not manual then
  local cursor = tonumber(redis.call('HGET', K_SCHEDULES, 'cursor:' .. name))
  if cursor and cursor >= tick then
    return { '', 1 }
  end
end
if redis.call('EXISTS', KEYS[11]) == 1 then
  return { '', 1 }
end

local job = { id = id, handler = handler, queue = QUEUE, payload = payload,
  priority = priority, state = 'waiting', attempts = 0, max_attempts = max_attempts,
  run_at = NOW, cancel_requested = false, created_at = NOW, updated_at = NOW,
  history = '[]', schedule = name, tick = tick, tick_manual = manual }
save(id, job)
redis.call('ZADD', K_ALL, 0, id)
redis.call('ZADD', K_WAITING, -priority, ready_member(NOW, id))
if not manual then
  redis.call('HSET', K_SCHEDULES, 'cursor:' .. name, int(tick))
end
redis.call('HSET', K_SCHEDULES, 'tick:' .. name, int(tick), 'job:' .. name, id)
if redis.call('EXISTS', K_PAUSED) == 0 then
  wake()
end
return { id, 0 }
