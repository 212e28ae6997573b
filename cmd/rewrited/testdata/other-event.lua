kumo.on('init', function() end)
kumo.on('smtp_server_rewrite_response', function() end)
