-- settle.lua: applies a batch of settlements to jobs of one queue, in one step.
-- KEYS: the queue's ten keys (see lib.lua), then [11..] one job key per settlement.
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua), then 9 per settlement:
--       id, lease owner, action (succeed | delete | retry | fail | cancel | release),
--       at (ms; retry and release, else ''), text (result bytes for succeed, error for
--       retry and fail, else ''), attempt record as JSON ('' for none; ignored for release
--       and delete), then, for a succeed or fail by the handle that claimed the job
--       ('' otherwise): the record as claimed, the record as settled, the job's unique key
--       ('' for none); for a delete: '', '', the job's unique key ('' for none).
-- Returns: the ids not applied because the job is not active under that owner (stale).
-- Publishes on the wake channel when a job went back to waiting or scheduled.
-- Delete is a success that keeps nothing: the job key and its set entries are deleted.
-- Retry becomes fail when no attempts are left; retry and release become cancel when a
-- cancel was requested. Release takes the attempt back (the record keeps its count).
-- Ownership is one HMGET of `leases` for the batch; the records of jobs not deleted are read
-- with one MGET and written with one MSET. A settled record from the caller is written as it
-- is when the stored record is still the one claimed (nothing, such as progress or a cancel
-- request, changed it since); otherwise the script decodes the record and settles it itself.

local WIDTH = 9
local n = (#ARGV - 4) / WIDTH
local ACTIONS = { succeed = true, delete = true, retry = true, fail = true, cancel = true,
  release = true }
local ids, read = {}, {}
for i = 0, n - 1 do
  local a = 5 + i * WIDTH
  if not ACTIONS[ARGV[a + 2]] then
    return redis.error_reply('kiln: unknown settle action `' .. tostring(ARGV[a + 2]) .. '`')
  end
  ids[i + 1] = ARGV[a]
  if ARGV[a + 2] ~= 'delete' then
    read[#read + 1] = KEYS[11 + i]
  end
end
if n == 0 then
  return {}
end
local held = redis.call('HMGET', K_LEASES, unpack(ids))
local raws = #read > 0 and redis.call('MGET', unpack(read)) or {}
local stale, settled, woke, moves = {}, {}, false, new_moves()

local r = 0
for i = 0, n - 1 do
  local a = 5 + i * WIDTH
  local id, owner, action = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local at, text, record = tonumber(ARGV[a + 3]), ARGV[a + 4], ARGV[a + 5]
  local claimed_at, holder = lease_parts(held[i + 1])
  local as_claimed, as_settled, unique = ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local raw = nil
  if action ~= 'delete' then
    r = r + 1
    raw = raws[r]
  end
  -- Held by `owner`, and not settled earlier in this batch (its writes are still pending).
  local holds = holder == owner and not settled[id]
  local job, done = nil, false
  if holds and action == 'delete' then
    done = true
    settled[id] = true
    unlease(moves, id)
    drop(moves, id)
    if unique ~= '' then
      release_unique({ unique_key = unique }, id)
    end
  elseif holds and as_settled ~= '' and raw == as_claimed then
    done = true
    settled[id] = true
    local records = moves.records
    records[#records + 1], records[#records + 2] = KEYS[11 + i], as_settled
    unlease(moves, id)
    zadd(moves, action == 'succeed' and K_SUCCEEDED or K_FAILED, NOW, id)
    if unique ~= '' then
      release_unique({ unique_key = unique }, id)
    end
  elseif holds then
    job = decode(raw)
    if not job then
      -- Leased, but the record is gone or unreadable: unlist the lease, and move a value
      -- aside rather than settle it.
      local _, kind = load(id)
      if kind == 'none' then
        unlist(id, nil)
      else
        quarantine(id, unreadable(kind))
      end
    end
  end
  if done then
    -- Deleted, or settled with the caller's record, above.
  elseif not job then
    table.insert(stale, id)
  else
    settled[id] = true
    local attempts = (tonumber(job.attempts) or 0) + 1
    local history = nil
    if action ~= 'release' and record ~= '' then
      history = appended(type(job.history) == 'string' and job.history or nil, record)
    end
    end_claim(job, attempts, owner, claimed_at)
    unlease(moves, id)
    if action == 'succeed' then
      finish(moves, id, job, 'succeeded', text, nil, history)
    elseif action == 'fail' or (action == 'retry' and not job.cancel_requested
      and attempts >= (tonumber(job.max_attempts) or 1)) then
      finish(moves, id, job, 'failed', nil, text, history)
    elseif action == 'cancel' or job.cancel_requested then
      finish(moves, id, job, 'cancelled', nil, nil, history)
    elseif action == 'retry' then
      job.history = history or job.history
      requeue(moves, id, job, at, text)
      woke = true
    else
      job.attempts = attempts - 1
      requeue(moves, id, job, at, nil)
      woke = true
    end
  end
end
flush_moves(moves)
if woke then
  wake()
end
return stale
