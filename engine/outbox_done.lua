-- The outbox written with version ARGV[1] is published and committed: drop it, unless a
-- newer write (with a newer outbox) came since.
-- KEYS[1] customer hash; ARGV[1] the version that wrote the outbox
if redis.call('HGET', KEYS[1], 'v') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'p')
  return 1
end
return 0
