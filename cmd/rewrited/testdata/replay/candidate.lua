-- The candidate: the same on DATA, but for blocked tenants (which the DATA
-- guard refuses); a help link on 550; a bug on 451; an invalid code on 421.
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if command == 'DATA' and status == 250 then
    if conn_meta:get_meta('tenant') == 'blocked' then return 554, 'tenant blocked' end
    return 250, 'queued as ' .. (conn_meta:get_meta('queue_id') or '?')
  end
  if status == 550 then return 550, '5.1.1 unknown user, see https://example.com/help' end
  if status == 451 then error('v2 bug') end
  if status == 421 then return 999, 'closing' end
end)
