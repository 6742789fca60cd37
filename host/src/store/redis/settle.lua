-- settle.lua: applies a batch of settlements to jobs of one queue, in one step.
-- KEYS: the queue's nine keys (see lib.lua), then [10..] one job key per settlement.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua), then 9 per settlement:
--       id, lease owner, action (succeed | retry | fail | cancel | release),
--       at (ms; retry and release, else ''), text (result bytes for succeed, error for
--       retry and fail, else ''), attempt record as JSON ('' for none; ignored for release),
--       then what the claim returned, when the caller still has it: claimed ('' when it
--       does not, else 'k' followed by 'e' if the job had an `error` and 'u' if it has a
--       unique key), the history as claimed, the unique key.
-- Returns: the ids not applied because the job is not active under that owner (stale).
-- Publishes on the wake channel when a job went back to waiting or scheduled.
-- Retry becomes fail when no attempts are left; retry and release become cancel when a
-- cancel was requested. Release takes the attempt back.
-- Ownership is one ZMSCORE of the active set for the whole batch. A succeed or fail whose
-- claim is known then writes the job hash once and reads nothing; other settlements read
-- what they decide on.

local WIDTH = 9
local stale, settled, woke, moves = {}, {}, false, new_moves()
local n = (#ARGV - 4) / WIDTH
local ACTIONS = { succeed = true, retry = true, fail = true, cancel = true, release = true }
local members = {}
for i = 0, n - 1 do
  local a = 5 + i * WIDTH
  if not ACTIONS[ARGV[a + 2]] then
    return redis.error_reply('kiln: unknown settle action `' .. tostring(ARGV[a + 2]) .. '`')
  end
  members[i + 1] = lease_member(ARGV[a], ARGV[a + 1])
end
local held = n > 0 and redis.call('ZMSCORE', K_ACTIVE, unpack(members)) or {}

-- Settles a job whose claim the caller described: no reads.
local function settle_known(id, owner, action, text, record, claimed, history, unique)
  local job = { lease_owner = owner, unique_key = string.find(claimed, 'u', 2, true) and unique }
  local clean = not string.find(claimed, 'e', 2, true)
  history = record ~= '' and appended(history, record) or nil
  if action == 'succeed' then
    return finish(id, job, 'succeeded', text, nil, moves, history, clean)
  end
  return finish(id, job, 'failed', nil, text, moves, history, true)
end

-- Settles a job by what its hash says now. Returns false when the key is not a hash, and
-- 'stale' when the hash does not say the job is active under `owner`.
local function settle_read(id, owner, action, at, text, record)
  local key = job_key(id)
  local fields = redis.pcall('HMGET', key, 'state', 'lease_owner', 'cancel_requested',
    'attempts', 'max_attempts', 'unique_key', 'priority', 'history')
  if fields.err then
    return false
  end
  if fields[1] ~= 'active' or fields[2] ~= owner then
    return 'stale'
  end
  -- What `finish` and `requeue` use of the job.
  local job = { lease_owner = owner, unique_key = fields[6] or nil, priority = fields[7] }
  local cancelled = fields[3] == '1'
  local attempts, max_attempts = tonumber(fields[4]), tonumber(fields[5])
  local history = nil
  if action ~= 'release' and record ~= '' then
    history = appended(fields[8] or nil, record)
  end
  if action == 'succeed' then
    return finish(id, job, 'succeeded', text, nil, moves, history)
  elseif action == 'fail' or (action == 'retry' and not cancelled and attempts >= max_attempts) then
    return finish(id, job, 'failed', nil, text, moves, history)
  elseif action == 'cancel' or cancelled then
    return finish(id, job, 'cancelled', nil, nil, moves, history)
  elseif action == 'retry' then
    redis.call('HSET', key, 'history', history or fields[8] or '[]')
    requeue(id, job, at, text, false)
  else
    requeue(id, job, at, nil, true)
  end
  woke = true
  return true
end

for i = 0, n - 1 do
  local a = 5 + i * WIDTH
  local id, owner, action = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local at, text, record = tonumber(ARGV[a + 3]), ARGV[a + 4], ARGV[a + 5]
  local claimed, history, unique = ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  if not held[i + 1] or settled[id] then
    -- Not held, or settled earlier in this batch (its set moves are still pending).
    table.insert(stale, id)
  else
    settled[id] = true
    local done
    if claimed ~= '' and (action == 'succeed' or action == 'fail') then
      done = settle_known(id, owner, action, text, record, claimed, history, unique)
    else
      done = settle_read(id, owner, action, at, text, record)
    end
    if done ~= true then
      -- Listed as held, but the hash disagrees or is not a hash: unlist the lease, and move
      -- a value that is not a hash aside rather than settle it.
      redis.call('ZREM', K_ACTIVE, members[i + 1])
      table.insert(stale, id)
      if not done then
        quarantine(id, 'the job key holds a ' .. redis.call('TYPE', job_key(id))['ok']
          .. ', not a hash')
      end
    end
  end
end
flush_moves(moves)
if woke then
  wake()
end
return stale
