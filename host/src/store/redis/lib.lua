-- lib.lua: helpers shared by Kiln's Redis scripts. The store prepends this file to every
-- script except enqueue.lua, which stays standalone because it is the producers' contract.
-- It has no KEYS or ARGV of its own; every script that uses it receives the same layout:
--
-- KEYS: [1] waiting  [2] scheduled  [3] active  [4] succeeded  [5] failed  [6] cancelled
--       [7] all  [8] unique  [9] paused  [10] leases  (all `<namespace>:{q:<queue>}:<name>`),
--       then the job keys the script names in its own header.
-- ARGV: [1] key prefix `<namespace>:{q:<queue>}:`  [2] queue  [3] now (ms since the epoch)
--       [4] wake channel, then the script's own arguments from [5].
--
-- A job is one string key `<prefix>job:<id>` holding its record, a MessagePack map (the
-- README's "Redis job format"). A claim does not rewrite the record: a job is active while
-- the queue's `leases` hash holds its id, and its record then still says `waiting`, with the
-- attempts from before the claim. Settling writes the outcome and the claim's facts (the host
-- builds the new record; settle.lua checks and writes it).
--
-- Scripts that discover ids in a queue's sets (claim, promote, retry all, clear, prune)
-- derive job keys from the prefix; they carry the queue's hash tag, so they live in the same
-- cluster slot as the KEYS.

local PREFIX, QUEUE, NOW, WAKE = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local K_WAITING, K_SCHEDULED, K_ACTIVE = KEYS[1], KEYS[2], KEYS[3]
local K_SUCCEEDED, K_FAILED, K_CANCELLED = KEYS[4], KEYS[5], KEYS[6]
local K_ALL, K_UNIQUE, K_PAUSED, K_LEASES = KEYS[7], KEYS[8], KEYS[9], KEYS[10]

-- A whole number as decimal text (Redis would otherwise print large numbers as 1e+14).
local function int(n)
  return string.format('%d', n)
end

local function job_key(id)
  return PREFIX .. 'job:' .. id
end

-- Member of the waiting zset (score: -priority): run_at as 16 digits, offset so that
-- negative times sort too, then the id. Equal priorities run by run_at, then by id, and
-- ids are time-ordered UUIDs, so FIFO.
local function ready_member(run_at, id)
  return string.format('%016d', run_at + 1e15) .. id
end

local function member_id(member)
  return string.sub(member, 17)
end

-- A `leases` value: when the claim was made, a colon, the lease owner.
local function lease_value(claimed_at, owner)
  return int(claimed_at) .. ':' .. owner
end

-- The claim time and owner of a `leases` value, or nil for a value Kiln did not write.
local function lease_parts(value)
  if type(value) ~= 'string' then
    return nil
  end
  local at, owner = string.match(value, '^(%-?%d+):(.*)$')
  if not at then
    return nil
  end
  return tonumber(at), owner
end

-- The record table a string holds, or nil when `raw` is not a string holding a MessagePack
-- map (MGET gives false for a missing key or one of another type).
local function decode(raw)
  if type(raw) ~= 'string' then
    return nil
  end
  local ok, job = pcall(cmsgpack.unpack, raw)
  return ok and type(job) == 'table' and job or nil
end

-- Reads job `id`'s record. Returns the record table, or nil and why not: 'none' (no key),
-- the key's type when it is not a string, or 'undecodable'.
local function load(id)
  local raw = redis.pcall('GET', job_key(id))
  if type(raw) == 'table' and raw.err then
    return nil, redis.call('TYPE', job_key(id))['ok']
  end
  if not raw then
    return nil, 'none'
  end
  local job = decode(raw)
  if not job then
    return nil, 'undecodable'
  end
  return job
end

-- Why `load` found no record, as a sentence for a corrupt job's error.
local function unreadable(kind)
  if kind == 'undecodable' then
    return 'the job key holds a string that is not a MessagePack map'
  end
  return 'the job key holds a ' .. kind .. ', not a job record'
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

-- Deferred writes: set changes, ended leases, records (key, packed record) and deleted jobs
-- collected by a batch script, applied by `flush_moves` with one command per set, one MSET for the records and
-- one DEL for the deleted jobs.
local function new_moves()
  return { add = {}, unleased = {}, records = {}, dropped = {} }
end

-- Adds `id` with `score` to the sorted set `key` at `flush_moves`.
local function zadd(moves, key, score, id)
  local args = pending(moves.add, key)
  local n = #args
  args[n + 1], args[n + 2] = score, id
end

-- Ends job `id`'s lease (its `active` and `leases` entries) now, or at `flush_moves`.
local function unlease(moves, id)
  if not moves then
    redis.call('ZREM', K_ACTIVE, id)
    redis.call('HDEL', K_LEASES, id)
    return
  end
  local ids = moves.unleased
  ids[#ids + 1] = id
end

-- Deletes job `id` (its key and its `all` entry) at `flush_moves`; its lease is ended apart.
local function drop(moves, id)
  local ids = moves.dropped
  ids[#ids + 1] = id
end

-- Writes job `id`'s record.
local function save(id, job)
  redis.call('SET', job_key(id), cmsgpack.pack(job))
end

-- Applies deferred writes, removals first, a few thousand arguments per command (an even
-- number, so MSET's key-value pairs stay whole).
local function flush_moves(moves)
  local CHUNK = 4000
  local function each_chunk(command, key, args)
    for first = 1, #args, CHUNK do
      local last = math.min(first + CHUNK - 1, #args)
      if key then
        redis.call(command, key, unpack(args, first, last))
      else
        redis.call(command, unpack(args, first, last))
      end
    end
  end
  each_chunk('ZREM', K_ACTIVE, moves.unleased)
  each_chunk('HDEL', K_LEASES, moves.unleased)
  local dropped, keys = moves.dropped, {}
  for i, id in ipairs(dropped) do
    keys[i] = job_key(id)
  end
  each_chunk('DEL', nil, keys)
  each_chunk('ZREM', K_ALL, dropped)
  each_chunk('MSET', nil, moves.records)
  for key, args in pairs(moves.add) do
    each_chunk('ZADD', key, args)
  end
end

-- Integer fields: range and the value a repaired record gets (nil: now).
local INT_FIELDS = {
  attempts = { 0, 4294967295, 0 },
  run_at = { -9007199254740991, 9007199254740991, nil },
  created_at = { -9007199254740991, 9007199254740991, nil },
  updated_at = { -9007199254740991, 9007199254740991, nil },
}
-- `priority` and `max_attempts` may be left out by a producer: they come from the config
-- (`fill_defaults`, and the host when it reads the record).
local OPTIONAL_INT_FIELDS = {
  priority = { -2147483648, 2147483647 },
  max_attempts = { 1, 4294967295 },
  claimed_at = { -9007199254740991, 9007199254740991 },
  finished_at = { -9007199254740991, 9007199254740991 },
  progress_percent = { 0, 100 },
}
local TEXT_FIELDS = { 'id', 'queue', 'handler', 'payload', 'history' }
local OPTIONAL_TEXT_FIELDS = { 'unique_key', 'lease_owner', 'result', 'error', 'progress_message' }
-- A record's states: `active` is not one, a lease says so.
local STATES = {
  scheduled = true, waiting = true, succeeded = true, failed = true, cancelled = true,
}

local function int_in(value, range)
  return type(value) == 'number' and value == math.floor(value)
    and value >= range[1] and value <= range[2]
end

-- What is wrong with a job record: a list of field names to repair and a list of reasons
-- (both empty when it is sound).
local function problems(job, id)
  local bad, reasons = {}, {}
  local function flag(field, reason)
    table.insert(bad, field)
    table.insert(reasons, reason)
  end
  for _, name in ipairs(TEXT_FIELDS) do
    if type(job[name]) ~= 'string' then
      flag(name, 'field `' .. name .. '` is missing or not a string')
    end
  end
  for _, name in ipairs(OPTIONAL_TEXT_FIELDS) do
    if job[name] ~= nil and type(job[name]) ~= 'string' then
      flag(name, 'field `' .. name .. '` is not a string')
    end
  end
  if job.id ~= id and type(job.id) == 'string' then flag('id', 'field `id` does not match the key') end
  if job.queue ~= QUEUE and type(job.queue) == 'string' then
    flag('queue', 'field `queue` does not match the key')
  end
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
  if type(job.cancel_requested) ~= 'boolean' then
    flag('cancel_requested', 'field `cancel_requested` is not a boolean')
  end
  if type(job.history) == 'string' then
    local ok, history = pcall(cjson.decode, job.history)
    if not ok or type(history) ~= 'table' or not string.match(job.history, '^%s*%[') then
      flag('history', 'field `history` is not a JSON array')
    end
  end
  return bad, reasons
end

-- Removes a job id from every state set and the leases (its waiting member is rebuilt from
-- the record's run_at, when it has one).
local function unlist(id, job)
  for _, key in ipairs({ K_SCHEDULED, K_SUCCEEDED, K_FAILED, K_CANCELLED }) do
    redis.call('ZREM', key, id)
  end
  unlease(nil, id)
  if job and int_in(job.run_at, INT_FIELDS.run_at) then
    redis.call('ZREM', K_WAITING, ready_member(job.run_at, id))
  end
end

-- Drops the unique-key entry of job `id` if it still points at it.
local function release_unique(job, id)
  if type(job.unique_key) == 'string' and redis.call('HGET', K_UNIQUE, job.unique_key) == id then
    redis.call('HDEL', K_UNIQUE, job.unique_key)
  end
end

-- Moves a broken job aside as a failed job whose error says why. A value that is not a
-- readable record (or any value, with `move_all`) is renamed to `<prefix>garbage:<id>`
-- first, so nothing a producer wrote is thrown away; the job key then holds a readable
-- failed record keeping what was sound (with `move_all`, the handler only). Returns the
-- reason text.
local function quarantine(id, reason, move_all)
  local key = job_key(id)
  local original, kind = load(id)
  unlist(id, original)
  if original then
    release_unique(original, id)
  end
  if kind ~= 'none' and (not original or move_all) then
    local aside = PREFIX .. 'garbage:' .. id
    redis.call('RENAME', key, aside)
    reason = reason .. '; its value was moved to `' .. aside .. '`'
  end
  -- A record the host could not decode keeps only its handler: any other field may be what
  -- it could not read.
  local job = original or {}
  if move_all then
    job = { handler = job.handler }
  end
  local bad = problems(job, id)
  for _, field in ipairs(bad) do
    local range = INT_FIELDS[field]
    if field == 'id' then
      job.id = id
    elseif field == 'queue' then
      job.queue = QUEUE
    elseif field == 'handler' or field == 'payload' then
      job[field] = ''
    elseif field == 'history' then
      job.history = '[]'
    elseif range then
      job[field] = range[3] or NOW
    elseif field ~= 'state' and field ~= 'cancel_requested' then
      job[field] = nil
    end
  end
  job.state, job.error, job.result, job.cancel_requested = 'failed', 'corrupt job: ' .. reason, nil, false
  job.updated_at, job.finished_at = NOW, NOW
  save(id, job)
  redis.call('ZADD', K_FAILED, NOW, id)
  redis.call('ZADD', K_ALL, 0, id)
  return reason
end

-- Loads job `id`, which the `listed` set says is there, expecting its record to be in
-- `state`. Returns the record when it is sound and in that state; otherwise removes or
-- quarantines it, appends `id, reason` to `report` and returns nil.
local function take(id, listed, state, report)
  local job, kind = load(id)
  if kind == 'none' then
    table.insert(report, id)
    table.insert(report, 'listed as ' .. listed .. ' but its job record is missing; dropped')
    return nil
  end
  if not job then
    table.insert(report, id)
    table.insert(report, quarantine(id, unreadable(kind)))
    return nil
  end
  local _, reasons = problems(job, id)
  if #reasons > 0 then
    table.insert(report, id)
    table.insert(report, quarantine(id, table.concat(reasons, '; ')))
    return nil
  end
  if job.state ~= state then
    table.insert(report, id)
    table.insert(report, 'listed as ' .. listed .. ' but it is ' .. job.state .. '; unlisted')
    return nil
  end
  return job
end

-- The config's defaults for this queue, when the script was given them (a JSON argument:
-- `{"priority", "max_attempts", "handlers": {name: max_attempts}}`), else nil.
local DEFAULTS = nil
local function use_defaults(json)
  if json and json ~= '' then
    DEFAULTS = cjson.decode(json)
  end
end

-- Gives a record a producer left without `priority` or `max_attempts` the config's values,
-- when the script has them; otherwise the fields stay absent and readers resolve them.
local function fill_defaults(job)
  if not DEFAULTS then
    return
  end
  if job.priority == nil then
    job.priority = DEFAULTS.priority
  end
  if job.max_attempts == nil then
    local handlers = DEFAULTS.handlers
    job.max_attempts = type(handlers) == 'table' and handlers[job.handler] or DEFAULTS.max_attempts
  end
end

-- Makes a sound job waiting at `run_at` (it was scheduled or is being requeued).
local function make_waiting(id, job, run_at)
  fill_defaults(job)
  job.state, job.run_at, job.updated_at = 'waiting', run_at, NOW
  save(id, job)
  redis.call('ZADD', K_WAITING, -(tonumber(job.priority) or 0), ready_member(run_at, id))
end

-- Promotes scheduled jobs whose run_at has come to waiting, at most `limit` of them.
-- Returns how many it promoted and how many due ids it took off the set (the others were
-- broken: dropped or moved aside, and reported).
local function promote_due(limit, report)
  local due = redis.call('ZRANGEBYSCORE', K_SCHEDULED, '-inf', NOW, 'LIMIT', 0, limit)
  local promoted = 0
  for _, id in ipairs(due) do
    redis.call('ZREM', K_SCHEDULED, id)
    local job = take(id, 'scheduled', 'scheduled', report)
    if job then
      make_waiting(id, job, job.run_at)
      promoted = promoted + 1
    end
  end
  return promoted, #due
end

local function wake()
  redis.call('PUBLISH', WAKE, QUEUE)
end
