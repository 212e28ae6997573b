-- Test policy: marks every reply with what the hook saw, so a test can read
-- the command value, the conn_meta keys and the set_meta counter off the wire.
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if command and command:find('close-me', 1, true) then
    return 421, '4.7.0 closed by policy'
  end
  if status == 354 and conn_meta:get_meta('ehlo_domain') == 'refuse-354.test' then
    return 554, '5.0.0 turned into a failure'
  end
  local n = (conn_meta:get_meta('x_n') or 0) + 1
  conn_meta:set_meta('x_n', n)
  local peer = conn_meta:get_meta('tls_peer_subject_name')
  local tag = string.format('[rw n=%d cmd=%s ehlo=%s tls=%s%s]', n, command or 'nil',
    tostring(conn_meta:get_meta('ehlo_domain')), conn_meta:get_meta('tls_cipher') and 'yes' or 'no',
    peer and (' peer=' .. table.concat(peer, ',')) or '')
  if n == 1 then
    tag = tag .. ' [from=' .. tostring(conn_meta:get_meta('received_from')) .. ' host=' .. tostring(conn_meta:get_meta('hostname')) .. ']'
  end
  local first, rest = response:match('^([^\n]*)(.*)$')
  return status, first .. ' ' .. tag .. rest
end)
