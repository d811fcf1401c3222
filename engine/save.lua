-- Write many customers' state and outbox, each only if nobody else wrote it since we
-- read it (compare-and-set), and with the same decision move the segment population
-- counters and the customer's timer (its next check time). Redis runs a script
-- atomically: no reader sees a half-written customer.
-- KEYS[1] population hash {"dimension<US>segment" = count}; KEYS[2..] customer hashes
-- {v = version, s = state document, p = outbox (absent when empty)}
-- ARGV, per customer in KEYS order: expected version, state, outbox or "", timer sorted
-- set, next check (ms) or "", customer id, n, then n (field, delta) pairs.
-- Returns one 1 (written) or 0 (lost the race) per customer.
local result = {}
local a = 1
for i = 2, #KEYS do
  local key = KEYS[i]
  local expected = tonumber(ARGV[a])
  local n = tonumber(ARGV[a + 6])
  local v = tonumber(redis.call('HGET', key, 'v') or '0')
  if v == expected then
    redis.call('HSET', key, 'v', v + 1, 's', ARGV[a + 1])
    if ARGV[a + 2] == '' then
      redis.call('HDEL', key, 'p')
    else
      redis.call('HSET', key, 'p', ARGV[a + 2])
    end
    if ARGV[a + 4] == '' then
      redis.call('ZREM', ARGV[a + 3], ARGV[a + 5])
    else
      redis.call('ZADD', ARGV[a + 3], ARGV[a + 4], ARGV[a + 5])
    end
    for j = 1, n do
      redis.call('HINCRBY', KEYS[1], ARGV[a + 5 + 2 * j], ARGV[a + 6 + 2 * j])
    end
    result[#result + 1] = 1
  else
    result[#result + 1] = 0
  end
  a = a + 7 + 2 * n
end
return result
