-- settle.lua: writes a batch of jobs of one queue whose end the host decided (settlements,
-- or the reaper taking back expired leases), each only while its lease and its record are
-- still the ones the decision read. The host decides what happens to a job (Kiln's
-- lifecycle rules live in Rust); this script only checks and writes, in one step.
-- KEYS: the queue's ten keys (see lib.lua), then [11..] one job key per job, in ARGV order,
--       then the queue's `parked` hash (job id -> the handler it waits for; see unpark.lua).
-- ARGV: [1..4] prefix, queue, now, wake channel (see lib.lua)
--       [5] 'held' (settlements: each lease must be the one read) or 'expired' (the reaper:
--       each lease must be the one read and its `active` score still before now),
--       then 8 per job:
--       id;
--       lease: the `leases` value read ('' for none);
--       expected: the record read ('' when the write does not depend on it; it is not read);
--       record: the new record ('' for delete and unlist);
--       move: succeeded, failed, cancelled, scheduled or waiting (the record is written and
--         the job added to that set with the score and member), parked (as scheduled, with
--         the id as member, and the member is the handler the job waits for in `parked`),
--         delete (the job key and its `all` entry are deleted) or unlist (the record is left
--         as it is);
--       score and member in that set ('' for delete and unlist);
--       unique: the unique key to release ('' for none).
--       Every write ends the job's lease (its `active` and `leases` entries).
-- Returns: { position, code, ... } for each job not written (positions count from 1):
-- 'stale' when the lease is not the one read (or no longer expired), or the job was written
-- earlier in this batch; 'changed' when the stored record is not the expected one.
-- Publishes on the wake channel when a job went to waiting or scheduled. A job written any
-- other way than parked is forgotten by `parked`.
-- Reads with one HMGET of `leases` (and for 'expired' one ZMSCORE of `active`) and one MGET
-- of the expected records; writes with one MSET of the new records and one DEL of the
-- deleted jobs, whatever the batch size.

local STALE, CHANGED = 'stale', 'changed'
local WIDTH = 8
local SETS = { succeeded = K_SUCCEEDED, failed = K_FAILED, cancelled = K_CANCELLED,
  scheduled = K_SCHEDULED, waiting = K_WAITING }
local expired_only = ARGV[5] == 'expired'
if not expired_only and ARGV[5] ~= 'held' then
  return redis.error_reply('kiln: settle takes `held` or `expired`, not `' .. tostring(ARGV[5]) .. '`')
end
local n = (#ARGV - 5) / WIDTH
if n ~= math.floor(n) then
  return redis.error_reply('kiln: settle takes 8 arguments per job after the first 5')
end
if n == 0 then
  return {}
end
local ids, checked = {}, {}
for i = 0, n - 1 do
  local a = 6 + i * WIDTH
  local move = ARGV[a + 4]
  if not SETS[move] and move ~= 'parked' and move ~= 'delete' and move ~= 'unlist' then
    return redis.error_reply('kiln: unknown settle move `' .. tostring(move) .. '`')
  end
  ids[i + 1] = ARGV[a]
  if ARGV[a + 2] ~= '' then
    checked[#checked + 1] = KEYS[11 + i]
  end
end
local leases = redis.call('HMGET', K_LEASES, unpack(ids))
local expiries = expired_only and redis.call('ZMSCORE', K_ACTIVE, unpack(ids))
local raws = #checked > 0 and redis.call('MGET', unpack(checked)) or {}
local refused, written, woke, moves = {}, {}, false, new_moves()
local K_PARKED = KEYS[11 + n]
local unpark = K_PARKED and redis.call('EXISTS', K_PARKED) == 1

local r = 0
for i = 0, n - 1 do
  local a = 6 + i * WIDTH
  local id, lease, expected, record = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local move, score, member, unique = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local raw = nil
  if expected ~= '' then
    r = r + 1
    raw = raws[r]
  end
  -- Not written earlier in this batch: its writes are still pending.
  local held = (leases[i + 1] or '') == lease and not written[id]
  if held and expiries then
    local at = tonumber(expiries[i + 1])
    held = at ~= nil and at < NOW
  end
  if not held then
    refused[#refused + 1], refused[#refused + 2] = i + 1, STALE
  elseif raw ~= nil and raw ~= expected then
    refused[#refused + 1], refused[#refused + 2] = i + 1, CHANGED
  else
    written[id] = true
    unlease(moves, id)
    if move == 'delete' then
      drop(moves, id)
    elseif move == 'parked' then
      local records = moves.records
      records[#records + 1], records[#records + 2] = KEYS[11 + i], record
      zadd(moves, K_SCHEDULED, score, id)
      redis.call('HSET', K_PARKED, id, member)
      woke = true
    elseif move ~= 'unlist' then
      local records = moves.records
      records[#records + 1], records[#records + 2] = KEYS[11 + i], record
      zadd(moves, SETS[move], score, member)
      woke = woke or move == 'waiting' or move == 'scheduled'
    end
    if unpark and move ~= 'parked' then
      redis.call('HDEL', K_PARKED, id)
    end
    if unique ~= '' then
      release_unique({ unique_key = unique }, id)
    end
  end
end
flush_moves(moves)
if woke then
  wake()
end
return refused
