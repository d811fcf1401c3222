-- Read many customers' {version, state, outbox, erased offsets} in one round trip.
-- KEYS: customer hashes. Returns a flat array: v1, s1, p1, o1, v2, s2, p2, o2, ...
local out = {}
for i = 1, #KEYS do
  local row = redis.call('HMGET', KEYS[i], 'v', 's', 'p', 'o')
  out[#out + 1] = row[1]
  out[#out + 1] = row[2]
  out[#out + 1] = row[3]
  out[#out + 1] = row[4]
end
return out
