-- Set customers aside whose processing raised: mark the hash (field q = the stage that
-- failed, shown by lookups) and take the customer off its timer set, so that the due loop
-- does not take it again and again. The next successful write (save.lua) clears the mark
-- and schedules its timer again. A customer with no hash yet gets none. Every key is one
-- bucket's (segengine.layout).
-- KEYS, per customer: its hash, the timer sorted set of its home partition. ARGV, per
-- customer in KEYS order: the stage, "1" if its home partition is known (else "": no timer
-- to take it off), the customer id.
for i = 1, #KEYS, 2 do
  local a = 3 * (i - 1) / 2 + 1
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HSET', KEYS[i], 'q', ARGV[a])
  end
  if ARGV[a + 1] ~= '' then
    redis.call('ZREM', KEYS[i + 1], ARGV[a + 2])
  end
end
return #KEYS / 2
