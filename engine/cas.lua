-- Write one customer's state and outbox if nobody else wrote it since we read it
-- (compare-and-set), and move the segment population counters by the same decision,
-- all atomically.
-- KEYS[1] customer hash {v = version, s = state document, p = outbox (absent when empty)}
-- KEYS[2] population hash {"dimension<US>segment" = count}
-- ARGV[1] expected version, ARGV[2] state, ARGV[3] outbox or "", ARGV[4..] field, delta pairs
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', v + 1, 's', ARGV[2])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'p')
else
  redis.call('HSET', KEYS[1], 'p', ARGV[3])
end
for i = 4, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
return 1
