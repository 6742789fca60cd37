-- enqueue.lua: stores a batch of new jobs in one queue, all or nothing. This is the
-- producers' contract (the README's "Redis job format"): it runs standalone, without
-- lib.lua, from any Redis client.
-- KEYS: [1] waiting  [2] scheduled  [3] active  [4] succeeded  [5] failed  [6] cancelled
--       [7] all  [8] unique  [9] paused  [10] leases  (each `<namespace>:{q:<queue>}:<name>`),
--       then [11..] one job key `<namespace>:{q:<queue>}:job:<id>` per job, in ARGV order
--       (10 + k keys for k jobs).
-- ARGV: [1] key prefix `<namespace>:{q:<queue>}:`  [2] queue  [3] now (ms since the epoch)
--       [4] wake channel `<namespace>:wake`, then 8 per job:
--       id (`<queue>/<uuid v7>`, the uuid lowercase and hyphenated), handler,
--       payload (bytes), priority (i32; '' for the queue's configured priority), run_at
--       (ms; '' for now), max_attempts (1 to 4294967295; '' for the configured value),
--       '1' when a unique key follows else '0', unique key.
-- Returns: two entries per job, in order: the job id and 1 when a unique key matched an
-- unfinished job (that job's id is returned and nothing is stored), else 0.
-- Every job is checked before any is written: one refused job (a bad id, key or number, an
-- id that exists) stores nothing of the batch and publishes nothing; the error names the
-- job and the field.
-- Each job is stored as its record, a MessagePack map (the README's "Redis job format").
-- A job whose priority or max_attempts is left empty is stored without that field and
-- scheduled at its run_at: the host that promotes it to waiting (a claim, or its reaper)
-- gives it the values of its config first, so it is ranked by the queue's priority.
-- Publishes the queue name on the wake channel when it stored a job and the queue is not
-- paused (a delayed job wakes idle hosts too, so they recompute when to claim next).

local prefix, queue, now, wake = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
-- A claimed job's record says `waiting` until it is settled.
local unfinished = { scheduled = true, waiting = true }
-- What a job id's part after `<queue>/` must be: a lowercase, hyphenated UUID v7.
-- (`%x` would let uppercase through: hex digits are spelled out.)
local function hex(n)
  return string.rep('[0-9a-f]', n)
end
local UUID_V7 = '^' .. hex(8) .. '%-' .. hex(4) .. '%-7' .. hex(3) .. '%-[89ab]' .. hex(3)
  .. '%-' .. hex(12) .. '$'
-- The fields' ranges: what the hosts decode (i32, a u32 of at least 1, a time in the range
-- a double holds exactly).
local PRIORITY = { -2147483648, 2147483647 }
local MAX_ATTEMPTS = { 1, 4294967295 }
local TIME = { -9007199254740991, 9007199254740991 }

local n = (#ARGV - 4) / 8
if n ~= math.floor(n) or n < 1 then
  return redis.error_reply('kiln: enqueue takes 8 arguments per job after the first 4')
end
if #KEYS ~= 10 + n then
  return redis.error_reply('kiln: enqueue of ' .. n .. ' jobs takes ' .. (10 + n)
    .. ' keys (the 10 queue keys and one job key per job), not ' .. #KEYS)
end

-- The whole number `text` holds when it is within `range`, else nil.
local function whole(text, range)
  if not string.match(text, '^%-?%d+$') then
    return nil
  end
  local value = tonumber(text)
  if value and value >= range[1] and value <= range[2] then
    return value
  end
  return nil
end

local function refuse(id, what)
  return redis.error_reply('kiln: job `' .. id .. '` ' .. what)
end

-- The id of the unfinished job holding `unique`, if any.
local function holder(unique)
  local other = redis.call('HGET', KEYS[8], unique)
  local raw = other and redis.pcall('GET', prefix .. 'job:' .. other)
  local ok, record = pcall(cmsgpack.unpack, type(raw) == 'string' and raw or '')
  if ok and type(record) == 'table' and unfinished[record.state] then
    return other
  end
  return nil
end

-- First pass: check every job; nothing is written until all are sound.
local jobs, seen = {}, {}
for i = 0, n - 1 do
  local a = 5 + i * 8
  local id = ARGV[a]
  local key = KEYS[11 + i]
  local uuid = string.sub(id, #queue + 2)
  if string.sub(id, 1, #queue + 1) ~= queue .. '/' or not string.match(uuid, UUID_V7) then
    return refuse(id, 'needs the id `' .. queue .. '/<uuid v7, lowercase>`')
  end
  if key ~= prefix .. 'job:' .. id then
    return refuse(id, 'needs the key `' .. prefix .. 'job:' .. id .. '`, not `' .. key .. '`')
  end
  local from_config = ARGV[a + 3] == '' or ARGV[a + 5] == ''
  local priority = ARGV[a + 3] == '' or whole(ARGV[a + 3], PRIORITY)
  if not priority then
    return refuse(id, 'has priority `' .. ARGV[a + 3] .. '`: it must be a whole number from '
      .. PRIORITY[1] .. ' to ' .. PRIORITY[2] .. ', or empty for the config\'s')
  end
  local run_at = now
  if ARGV[a + 4] ~= '' then
    run_at = whole(ARGV[a + 4], TIME)
    if not run_at then
      return refuse(id, 'has run_at `' .. ARGV[a + 4] .. '`: it must be whole milliseconds '
        .. 'since the epoch, or empty for now')
    end
  end
  local max_attempts = ARGV[a + 5] == '' or whole(ARGV[a + 5], MAX_ATTEMPTS)
  if not max_attempts then
    return refuse(id, 'has max_attempts `' .. ARGV[a + 5] .. '`: it must be a whole number from '
      .. MAX_ATTEMPTS[1] .. ' to ' .. string.format('%d', MAX_ATTEMPTS[2]) .. ', or empty for the config\'s')
  end
  local unique = nil
  if ARGV[a + 6] == '1' then
    unique = ARGV[a + 7]
  elseif ARGV[a + 6] ~= '0' then
    return refuse(id, 'has has_unique `' .. ARGV[a + 6] .. '`: it must be 1 or 0')
  end
  local existing = unique and holder(unique)
  if not existing and (seen[id] or redis.call('EXISTS', key) == 1) then
    return refuse(id, 'already exists')
  end
  seen[id] = true
  jobs[#jobs + 1] = { id = id, key = key, handler = ARGV[a + 1], payload = ARGV[a + 2],
    priority = priority ~= true and priority or nil, run_at = run_at,
    max_attempts = max_attempts ~= true and max_attempts or nil, unique = unique,
    from_config = from_config }
end

-- Second pass: write them. A unique key taken by an earlier job of this batch returns it.
local results, woke = {}, false
for _, job in ipairs(jobs) do
  local existing = job.unique and holder(job.unique)
  if existing then
    table.insert(results, existing)
    table.insert(results, 1)
  else
    local state = (job.run_at > now or job.from_config) and 'scheduled' or 'waiting'
    local record = { id = job.id, handler = job.handler, queue = queue, payload = job.payload,
      priority = job.priority, state = state, attempts = 0, max_attempts = job.max_attempts,
      run_at = job.run_at, cancel_requested = false, created_at = now, updated_at = now,
      history = '[]' }
    if job.unique then
      record.unique_key = job.unique
      redis.call('HSET', KEYS[8], job.unique, job.id)
    end
    redis.call('SET', job.key, cmsgpack.pack(record))
    redis.call('ZADD', KEYS[7], 0, job.id)
    if state == 'scheduled' then
      redis.call('ZADD', KEYS[2], job.run_at, job.id)
    else
      redis.call('ZADD', KEYS[1], -job.priority,
        string.format('%016d', job.run_at + 1e15) .. job.id)
    end
    woke = true
    table.insert(results, job.id)
    table.insert(results, 0)
  end
end
if woke and redis.call('EXISTS', KEYS[9]) == 0 then
  redis.call('PUBLISH', wake, queue)
end
return results
