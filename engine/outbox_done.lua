-- These outboxes are published and committed: drop each, unless a newer write (with a
-- newer outbox) came since. KEYS: customer hashes; ARGV: the version that wrote each.
local dropped = 0
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], 'v') == ARGV[i] then
    redis.call('HDEL', KEYS[i], 'p')
    dropped = dropped + 1
  end
end
return dropped
