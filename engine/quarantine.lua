-- Set customers aside whose processing raised: mark the hash (field q = the stage that
-- failed, shown by lookups) and take the customer off its timer set, so that the due loop
-- does not take it again and again. The next successful write (save.lua) clears the mark
-- and schedules its timer again. A customer with no hash yet gets none.
-- KEYS: customer hashes. ARGV, per customer in KEYS order: the stage, its timer sorted set
-- (or ""), the customer id.
for i = 1, #KEYS do
  local a = 3 * (i - 1) + 1
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HSET', KEYS[i], 'q', ARGV[a])
  end
  if ARGV[a + 1] ~= '' then
    redis.call('ZREM', ARGV[a + 1], ARGV[a + 2])
  end
end
return #KEYS
