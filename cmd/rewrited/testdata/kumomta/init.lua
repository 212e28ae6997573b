-- A whole policy written the way KumoMTA policies are: it configures an MTA
-- at load and in its init and get_* handlers, which rewrited keeps inert,
-- and rewrites replies with helpers from modules.
local kumo = require 'kumo'
local kstring = require 'kumo.string'

-- Site modules live in lib/, beside the policy; KumoMTA's helper modules are
-- found through --lua-path (share/ here, /opt/kumomta/share by default).
package.path = 'testdata/kumomta/lib/?.lua;' .. package.path

local replies = require 'replies'
local utils = require 'policy-extras.site_utils'
local queues = require 'policy-extras.queues'
local settings = dofile 'testdata/kumomta/settings.lua'

local environment = os.getenv 'REWRITED_TEST_ENVIRONMENT' or 'production'

kumo.configure_accounting_db_path '/var/spool/kumomta/accounting.db'
kumo.set_max_spare_lua_contexts(4)

kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '/var/spool/kumomta/data' }
  kumo.configure_local_logs { log_dir = '/var/log/kumomta' }
  kumo.start_esmtp_listener { listen = '0.0.0.0:25', hostname = settings.hostname }
end)

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return queues.config_for(domain)
end)

kumo.on('get_egress_path_config', function(domain, egress_source, site_name)
  return kumo.make_egress_path { connection_limit = 10 }
end)

kumo.on('smtp_server_message_received', function(msg)
  msg:set_meta('queue', 'default')
end)

kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if kstring.starts_with(response, 'maintenance') then
    return 421, replies.closing(settings.hostname)
  end
  if utils.is_data_success(status, command) then
    return status, replies.queued(response, environment)
  end
end)
