kumo.on('smtp_server_rewrite_response', function(status)
  return status // 100
end)
