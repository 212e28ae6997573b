-- A policy for the eval tests: the reply text picks the behaviour.
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if response == 'types' then
    local parts = {}
    for _, k in ipairs({'n', 'b', 's', 'quoted', 'null', 'list', 'arr', 'obj'}) do
      local v = conn_meta:get_meta(k)
      if type(v) == 'table' then v = v.k or #v end
      parts[#parts + 1] = k .. '=' .. type(v) .. ':' .. tostring(v)
    end
    return nil, table.concat(parts, ' ')
  end
  if response == 'command' then
    return nil, 'command=' .. tostring(command)
  end
  if response == 'boom' then
    error('boom')
  end
  if response == 'bare cr' then
    return 250, 'ok\r250 injected'
  end
  if response == 'close' then
    conn_meta:set_meta('x_failures', 3)
    return 421, '4.7.0 Too many errors\nclosing'
  end
  if response == 'log' then
    print('print says', command)
    kumo.log_warn('log_warn says', status, 1/0, 0/0 ~= 0/0)
    return
  end
  if command == 'DATA' and status == 250 then
    return 554, '5.7.1 Rejected after all'
  end
end)
