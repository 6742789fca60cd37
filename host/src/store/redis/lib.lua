-- lib.lua: helpers shared by Kiln's Redis scripts. The store prepends this file to every
-- script except enqueue.lua, which stays standalone because it is the producers' contract.
-- It has no KEYS or ARGV of its own; every script that uses it receives the same layout:
--
-- KEYS: [1] waiting  [2] scheduled  [3] active  [4] succeeded  [5] failed  [6] cancelled
--       [7] all  [8] unique  [9] paused  (all `<namespace>:{q:<queue>}:<name>`), then the
--       job keys the script names in its own header.
-- ARGV: [1] key prefix `<namespace>:{q:<queue>}:`  [2] queue  [3] now (ms since the epoch)
--       [4] wake channel, then the script's own arguments from [5].
--
-- Job keys are `<prefix>job:<id>`. Scripts that discover ids in a queue's sets (claim,
-- recover, retry all, clear, prune) derive job keys from the prefix; they carry the queue's
-- hash tag, so they live in the same cluster slot as the KEYS.

local PREFIX, QUEUE, NOW, WAKE = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local K_WAITING, K_SCHEDULED, K_ACTIVE = KEYS[1], KEYS[2], KEYS[3]
local K_SUCCEEDED, K_FAILED, K_CANCELLED = KEYS[4], KEYS[5], KEYS[6]
local K_ALL, K_UNIQUE, K_PAUSED = KEYS[7], KEYS[8], KEYS[9]

-- A whole number as decimal text (Redis would otherwise print large numbers as 1e+14).
local function int(n)
  return string.format('%d', n)
end

-- The script's `now` as it is written into job fields.
local NOW_TEXT = int(NOW)

local function job_key(id)
  return PREFIX .. 'job:' .. id
end

-- Member of the waiting zset (score: -priority): run_at as 16 digits, offset so that
-- negative times sort too, then the id. Equal priorities run by run_at, then by id, and
-- ids are time-ordered UUIDs, so FIFO.
local function ready_member(run_at, id)
  return string.format('%016d', tonumber(run_at) + 1e15) .. id
end

local function member_id(member)
  return string.sub(member, 17)
end

-- Member of the active zset (score: lease expiry): the id's length, a colon, the id, then
-- the lease owner. A batch's ownership is then one ZMSCORE instead of a read per job.
local function lease_member(id, owner)
  return #id .. ':' .. id .. owner
end

-- The job id and lease owner of an active-set member.
local function lease_parts(member)
  local n, rest = string.match(member, '^(%d+):(.*)$')
  n = tonumber(n)
  if not n or n > #rest then
    return member, ''
  end
  return string.sub(rest, 1, n), string.sub(rest, n + 1)
end

-- An HGETALL reply as a table, or nil when it is empty (the key does not exist).
local function as_table(flat)
  if #flat == 0 then
    return nil
  end
  local job = {}
  for i = 1, #flat, 2 do
    job[flat[i]] = flat[i + 1]
  end
  return job
end

-- The job's fields as a table, or nil when the key does not exist.
local function fields(key)
  return as_table(redis.call('HGETALL', key))
end

-- `history` (a JSON array, or nil for none) with one JSON attempt record appended.
local function appended(history, record)
  if not history or string.match(history, '^%s*%[%s*%]%s*$') then
    return '[' .. record .. ']'
  end
  return (string.gsub(history, '%]%s*$', '')) .. ',' .. record .. ']'
end

-- Appends one JSON attempt record to the job's history.
local function append_history(key, record)
  if record == nil or record == '' then
    return
  end
  redis.call('HSET', key, 'history', appended(redis.call('HGET', key, 'history'), record))
end

-- The list of deferred arguments for `key` in `lists`, created empty on first use.
local function pending(lists, key)
  local args = lists[key]
  if not args then
    args = {}
    lists[key] = args
  end
  return args
end

-- Adds `id` with `score` to the sorted set `key` now, or, given `moves`, at `flush_moves`:
-- a batch then costs one command per set instead of one per job.
local function zadd(moves, key, score, id)
  if not moves then
    redis.call('ZADD', key, score, id)
    return
  end
  local args = pending(moves.add, key)
  local n = #args
  args[n + 1], args[n + 2] = score, id
end

-- Removes `id` from the sorted set `key` now, or at `flush_moves`.
local function zrem(moves, key, id)
  if not moves then
    redis.call('ZREM', key, id)
    return
  end
  local args = pending(moves.rem, key)
  args[#args + 1] = id
end

local function new_moves()
  return { add = {}, rem = {} }
end

-- Applies deferred set changes, removals first, a few thousand arguments per command.
local function flush_moves(moves)
  local CHUNK = 4000
  for key, ids in pairs(moves.rem) do
    for first = 1, #ids, CHUNK do
      redis.call('ZREM', key, unpack(ids, first, math.min(first + CHUNK - 1, #ids)))
    end
  end
  for key, args in pairs(moves.add) do
    for first = 1, #args, CHUNK do
      redis.call('ZADD', key, unpack(args, first, math.min(first + CHUNK - 1, #args)))
    end
  end
end

-- RFC 3339 in UTC with milliseconds, as Kiln prints timestamps.
local function format_time(ms)
  local secs = math.floor(ms / 1000)
  local millis = ms - secs * 1000
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400
  if month <= 2 then
    year = year + 1
  end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, day,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, millis)
end

local INT_FIELDS = {
  priority = { -2147483648, 2147483647, '0' },
  attempts = { 0, 4294967295, '0' },
  max_attempts = { 1, 4294967295, '1' },
  run_at = { -9007199254740991, 9007199254740991, nil },
  created_at = { -9007199254740991, 9007199254740991, nil },
  updated_at = { -9007199254740991, 9007199254740991, nil },
}
local OPTIONAL_INT_FIELDS = {
  lease_expires_at = { -9007199254740991, 9007199254740991 },
  claimed_at = { -9007199254740991, 9007199254740991 },
  finished_at = { -9007199254740991, 9007199254740991 },
  progress_percent = { 0, 100 },
}
local STATES = {
  scheduled = true, waiting = true, active = true,
  succeeded = true, failed = true, cancelled = true,
}

local function int_in(value, range)
  if type(value) ~= 'string' or not string.match(value, '^%-?%d+$') then
    return false
  end
  local n = tonumber(value)
  return n ~= nil and n >= range[1] and n <= range[2]
end

-- What is wrong with a job hash: a list of field names to repair and a list of reasons
-- (both empty when it is sound).
local function problems(job, id)
  local bad, reasons = {}, {}
  local function flag(field, reason)
    table.insert(bad, field)
    table.insert(reasons, reason)
  end
  if job.id ~= id then flag('id', 'field `id` does not match the key') end
  if job.queue ~= QUEUE then flag('queue', 'field `queue` does not match the key') end
  if type(job.handler) ~= 'string' then flag('handler', 'field `handler` is missing') end
  if type(job.payload) ~= 'string' then flag('payload', 'field `payload` is missing') end
  if not STATES[job.state or ''] then flag('state', 'field `state` is not a job state') end
  for name, range in pairs(INT_FIELDS) do
    if not int_in(job[name], range) then
      flag(name, 'field `' .. name .. '` is missing or not a valid integer')
    end
  end
  for name, range in pairs(OPTIONAL_INT_FIELDS) do
    if job[name] ~= nil and not int_in(job[name], range) then
      flag(name, 'field `' .. name .. '` is not a valid integer')
    end
  end
  if job.cancel_requested ~= nil and job.cancel_requested ~= '0' and job.cancel_requested ~= '1' then
    flag('cancel_requested', 'field `cancel_requested` is not 0 or 1')
  end
  local text = job.history or ''
  local ok, history = pcall(cjson.decode, text)
  if not ok or type(history) ~= 'table' or not string.match(text, '^%s*%[') then
    flag('history', 'field `history` is missing or not a JSON array')
  end
  return bad, reasons
end

-- Removes a job id from every state set (the waiting and active ones when their member can
-- be rebuilt from the job's fields).
local function unlist(id, job)
  for _, key in ipairs({ K_SCHEDULED, K_SUCCEEDED, K_FAILED, K_CANCELLED }) do
    redis.call('ZREM', key, id)
  end
  if job and int_in(job.run_at, INT_FIELDS.run_at) then
    redis.call('ZREM', K_WAITING, ready_member(job.run_at, id))
  end
  if job and type(job.lease_owner) == 'string' then
    redis.call('ZREM', K_ACTIVE, lease_member(id, job.lease_owner))
  end
end

-- Drops the unique-key entry of job `id` if it still points at it.
local function release_unique(job, id)
  if job.unique_key and redis.call('HGET', K_UNIQUE, job.unique_key) == id then
    redis.call('HDEL', K_UNIQUE, job.unique_key)
  end
end

-- Moves a broken job aside as a failed job whose error says why. A key that is not a hash
-- (or any key, with `move_all`) is renamed to `<prefix>garbage:<id>` first, so nothing a
-- producer wrote is thrown away; what remains at the job key is a readable failed job.
-- Returns the reason text.
local function quarantine(id, reason, move_all)
  local key = job_key(id)
  local kind = redis.call('TYPE', key)['ok']
  local original = kind == 'hash' and fields(key) or {}
  unlist(id, original)
  release_unique(original, id)
  if kind ~= 'none' and (kind ~= 'hash' or move_all) then
    local aside = PREFIX .. 'garbage:' .. id
    redis.call('RENAME', key, aside)
    reason = reason .. '; its value was moved to `' .. aside .. '`'
    if type(original.handler) == 'string' then
      redis.call('HSET', key, 'handler', original.handler)
    end
  end
  local job = fields(key) or {}
  local bad = problems(job, id)
  for _, field in ipairs(bad) do
    local default = INT_FIELDS[field] and INT_FIELDS[field][3]
    if field == 'id' then
      redis.call('HSET', key, 'id', id)
    elseif field == 'queue' then
      redis.call('HSET', key, 'queue', QUEUE)
    elseif field == 'handler' or field == 'payload' then
      redis.call('HSET', key, field, '')
    elseif field == 'history' then
      redis.call('HSET', key, 'history', '[]')
    elseif default then
      redis.call('HSET', key, field, default)
    elseif INT_FIELDS[field] then
      redis.call('HSET', key, field, NOW_TEXT)
    elseif field ~= 'state' then
      redis.call('HDEL', key, field)
    end
  end
  redis.call('HDEL', key, 'result')
  redis.call('HSET', key, 'state', 'failed', 'error', 'corrupt job: ' .. reason,
    'cancel_requested', '0', 'updated_at', NOW_TEXT, 'finished_at', NOW_TEXT)
  redis.call('ZADD', K_FAILED, NOW, id)
  redis.call('ZADD', K_ALL, 0, id)
  return reason
end

-- Loads job `id` that a set says is in `state`. Returns its fields when it is sound and in
-- that state; otherwise removes or quarantines it, appends `id, reason` to `report` and
-- returns nil.
local function take(id, state, report)
  local key = job_key(id)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then
    table.insert(report, id)
    table.insert(report, 'listed as ' .. state .. ' but its job hash is missing; dropped')
    return nil
  end
  if kind ~= 'hash' then
    table.insert(report, id)
    table.insert(report, quarantine(id, 'the job key holds a ' .. kind .. ', not a hash'))
    return nil
  end
  local job = fields(key)
  local _, reasons = problems(job, id)
  if #reasons > 0 then
    table.insert(report, id)
    table.insert(report, quarantine(id, table.concat(reasons, '; ')))
    return nil
  end
  if job.state ~= state then
    table.insert(report, id)
    table.insert(report, 'listed as ' .. state .. ' but it is ' .. job.state .. '; unlisted')
    return nil
  end
  return job
end

-- Makes a sound job waiting (it was scheduled or is being requeued).
local function make_waiting(id, job, run_at)
  redis.call('HSET', job_key(id), 'state', 'waiting', 'run_at', int(run_at), 'updated_at', NOW_TEXT)
  redis.call('ZADD', K_WAITING, -tonumber(job.priority), ready_member(run_at, id))
end

-- Promotes scheduled jobs whose run_at has come to waiting, at most `limit` of them.
-- Returns how many it promoted.
local function promote_due(limit, report)
  local due = redis.call('ZRANGEBYSCORE', K_SCHEDULED, '-inf', NOW, 'LIMIT', 0, limit)
  local promoted = 0
  for _, id in ipairs(due) do
    redis.call('ZREM', K_SCHEDULED, id)
    local job = take(id, 'scheduled', report)
    if job then
      make_waiting(id, job, tonumber(job.run_at))
      promoted = promoted + 1
    end
  end
  return promoted
end

local DONE_SETS = { succeeded = K_SUCCEEDED, failed = K_FAILED, cancelled = K_CANCELLED }

-- Finishes a held job in `state` (succeeded, failed or cancelled). `history`, when given,
-- is the job's new attempt history; `moves` defers the set changes (see `zadd`).
-- `job.lease_owner` names the active-set member. A `result` or `error` the job had and does
-- not get now is deleted, unless `clean` says it has neither. The job's `lease_owner`,
-- `lease_expires_at` and `claimed_at` stay: they describe its last claim.
-- Returns false, having changed nothing, when the job key is not a hash.
local function finish(id, job, state, result, err, moves, history, clean)
  local key = job_key(id)
  local set = { key, 'state', state, 'updated_at', NOW_TEXT, 'finished_at', NOW_TEXT }
  local drop = nil
  if result then
    set[#set + 1], set[#set + 2] = 'result', result
  elseif not clean then
    drop = { key, 'result' }
  end
  if err then
    set[#set + 1], set[#set + 2] = 'error', err
  elseif not clean then
    drop = drop or { key }
    drop[#drop + 1] = 'error'
  end
  if history then
    set[#set + 1], set[#set + 2] = 'history', history
  end
  if type(redis.pcall('HSET', unpack(set))) == 'table' then
    return false
  end
  if drop then
    redis.call('HDEL', unpack(drop))
  end
  zrem(moves, K_ACTIVE, lease_member(id, job.lease_owner))
  zadd(moves, DONE_SETS[state], NOW, id)
  if job.unique_key then
    release_unique(job, id)
  end
  return true
end

-- Puts a held job back to scheduled or waiting at `at`. `uncount` takes the attempt back.
local function requeue(id, job, at, err, uncount)
  local key = job_key(id)
  if err then redis.call('HSET', key, 'error', err) end
  if uncount then redis.call('HINCRBY', key, 'attempts', -1) end
  redis.call('ZREM', K_ACTIVE, lease_member(id, job.lease_owner))
  if at > NOW then
    redis.call('HSET', key, 'state', 'scheduled', 'run_at', int(at), 'updated_at', NOW_TEXT)
    redis.call('ZADD', K_SCHEDULED, at, id)
  else
    make_waiting(id, job, at)
  end
end

local function wake()
  redis.call('PUBLISH', WAKE, QUEUE)
end
