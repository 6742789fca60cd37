-- enqueue.lua: stores a batch of new jobs in one queue. This is the producers' contract
-- (the README's "Redis job format"): it runs standalone, without lib.lua, from any Redis client.
-- KEYS: [1] waiting  [2] scheduled  [3] active  [4] succeeded  [5] failed  [6] cancelled
--       [7] all  [8] unique  [9] paused  [10] leases  (each `<namespace>:{q:<queue>}:<name>`),
--       then [11..] one job key `<namespace>:{q:<queue>}:job:<id>` per job, in ARGV order.
-- ARGV: [1] key prefix `<namespace>:{q:<queue>}:`  [2] queue  [3] now (ms since the epoch)
--       [4] wake channel `<namespace>:wake`, then 8 per job:
--       id (`<queue>/<uuid v7>`), handler, payload (bytes), priority (i32),
--       run_at (ms; '' for now), max_attempts (>= 1), '1' when a unique key follows else '0',
--       unique key.
-- Returns: two entries per job, in order: the job id and 1 when a unique key matched an
-- unfinished job (that job's id is returned and nothing is stored), else 0.
-- Each job is stored as its record, a MessagePack map (the README's "Redis job format").
-- Publishes the queue name on the wake channel when it stored a job and the queue is not
-- paused (a delayed job wakes idle hosts too, so they recompute when to claim next).

local prefix, queue, now, wake = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
-- A claimed job's record says `waiting` until it is settled.
local unfinished = { scheduled = true, waiting = true }
local results, woke = {}, false
local n = (#ARGV - 4) / 8
if n ~= math.floor(n) then
  return redis.error_reply('kiln: enqueue takes 8 arguments per job after the first 4')
end
for i = 0, n - 1 do
  local a = 5 + i * 8
  local id, handler, payload = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local priority, run_at = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]) or now
  local max_attempts, has_unique, unique = tonumber(ARGV[a + 5]), ARGV[a + 6], ARGV[a + 7]
  local key = KEYS[11 + i]
  if key ~= prefix .. 'job:' .. id or string.sub(id, 1, #queue + 1) ~= queue .. '/' then
    return redis.error_reply('kiln: job `' .. id .. '` needs the id `' .. queue
      .. '/<uuid>` and the key `' .. prefix .. 'job:<id>`')
  end
  if not priority or priority ~= math.floor(priority) or not max_attempts
    or max_attempts < 1 or max_attempts ~= math.floor(max_attempts)
    or run_at ~= math.floor(run_at) then
    return redis.error_reply('kiln: job `' .. id .. '` has a bad priority, run_at or max_attempts')
  end
  local existing = nil
  if has_unique == '1' then
    local other = redis.call('HGET', KEYS[8], unique)
    local raw = other and redis.pcall('GET', prefix .. 'job:' .. other)
    local ok, record = pcall(cmsgpack.unpack, type(raw) == 'string' and raw or '')
    if ok and type(record) == 'table' and unfinished[record.state] then
      existing = other
    end
  end
  if existing then
    table.insert(results, existing)
    table.insert(results, 1)
  elseif redis.call('EXISTS', key) == 1 then
    return redis.error_reply('kiln: job `' .. id .. '` already exists')
  else
    local state = run_at > now and 'scheduled' or 'waiting'
    local record = { id = id, handler = handler, queue = queue, payload = payload,
      priority = priority, state = state, attempts = 0, max_attempts = max_attempts,
      run_at = run_at, cancel_requested = false, created_at = now, updated_at = now,
      history = '[]' }
    if has_unique == '1' then
      record.unique_key = unique
      redis.call('HSET', KEYS[8], unique, id)
    end
    redis.call('SET', key, cmsgpack.pack(record))
    redis.call('ZADD', KEYS[7], 0, id)
    if state == 'scheduled' then
      redis.call('ZADD', KEYS[2], run_at, id)
    else
      redis.call('ZADD', KEYS[1], -priority, string.format('%016d', run_at + 1e15) .. id)
    end
    woke = true
    table.insert(results, id)
    table.insert(results, 0)
  end
end
if woke and redis.call('EXISTS', KEYS[9]) == 0 then
  redis.call('PUBLISH', wake, queue)
end
return results
