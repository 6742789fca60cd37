-- settle.lua: applies a batch of settlements to jobs of one queue, in one step.
-- KEYS: the queue's nine keys (see lib.lua), then [10..] one job key per settlement.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua), then 6 per settlement:
--       id, lease owner, action (succeed | retry | fail | cancel | release),
--       at (ms; retry and release, else ''), text (result bytes for succeed, error for
--       retry and fail, else ''), attempt record as JSON ('' for none; ignored for release)
-- Returns: the ids not applied because the job is not active under that owner (stale).
-- Publishes on the wake channel when a job went back to waiting or scheduled.
-- Retry becomes fail when no attempts are left; retry and release become cancel when a
-- cancel was requested. Release takes the attempt back.

local stale, woke, moves = {}, false, new_moves()
local n = (#ARGV - 4) / 6
local ACTIONS = { succeed = true, retry = true, fail = true, cancel = true, release = true }
for i = 0, n - 1 do
  local action = ARGV[7 + i * 6]
  if not ACTIONS[action] then
    return redis.error_reply('kiln: unknown settle action `' .. tostring(action) .. '`')
  end
end
for i = 0, n - 1 do
  local a = 5 + i * 6
  local id, owner, action = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local at, text, record = tonumber(ARGV[a + 3]), ARGV[a + 4], ARGV[a + 5]
  local key = KEYS[10 + i]
  -- One read for everything a settlement checks or needs; a key that is not a hash, or a
  -- job not held under this lease, is stale.
  local held = redis.pcall('HMGET', key, 'state', 'lease_owner', 'cancel_requested',
    'attempts', 'max_attempts', 'unique_key', 'priority', 'history')
  if held.err or held[1] ~= 'active' or held[2] ~= owner then
    table.insert(stale, id)
  else
    local job = {
      state = held[1], lease_owner = held[2], cancel_requested = held[3],
      attempts = held[4], max_attempts = held[5], unique_key = held[6], priority = held[7],
    }
    local cancelled = job.cancel_requested == '1'
    local attempts, max_attempts = tonumber(job.attempts), tonumber(job.max_attempts)
    local history = nil
    if action ~= 'release' and record ~= '' then
      history = appended(held[8] or nil, record)
    end
    if action == 'succeed' then
      finish(id, job, 'succeeded', text, nil, moves, history)
    elseif action == 'fail' then
      finish(id, job, 'failed', nil, text, moves, history)
    elseif action == 'cancel' or ((action == 'retry' or action == 'release') and cancelled) then
      finish(id, job, 'cancelled', nil, nil, moves, history)
    elseif action == 'retry' and attempts >= max_attempts then
      finish(id, job, 'failed', nil, text, moves, history)
    elseif action == 'retry' then
      redis.call('HSET', key, 'history', history or held[8] or '[]')
      requeue(id, job, at, text, false)
      woke = true
    elseif action == 'release' then
      requeue(id, job, at, nil, true)
      woke = true
    end
  end
end
flush_moves(moves)
if woke then
  wake()
end
return stale
