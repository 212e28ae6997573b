-- Loaded with dofile: plain values the policy shares with its modules.
return {
  hostname = 'mx.example.net',
  queue_max_age = '3 days',
}
