--- `:checkhealth infill`: is the server there, which release, which device and model, is the model ready,
--- is the workspace indexed. Asks the server's own command (`infill --version`, `infill doctor --json`)
--- and the running client's progress, so what it says is what the server would do.

local M = {}

local health = vim.health

--- The server command without its `serve` part, to run other subcommands with.
---@param cmd string[]
---@return string[]
local function base_cmd(cmd)
  local base = {}
  for _, arg in ipairs(cmd) do
    if arg == 'serve' then
      break
    end
    table.insert(base, arg)
  end
  return base
end

---@return vim.SystemCompleted?
local function run(cmd, ...)
  local argv = vim.list_extend(vim.deepcopy(cmd), { ... })
  local ok, result = pcall(function()
    return vim.system(argv, { text = true }):wait(30000)
  end)
  return ok and result or nil
end

local function check_server(infill)
  local cmd = infill.config.cmd or {}
  health.info('command: `' .. table.concat(cmd, ' ') .. '`')
  if not cmd[1] or vim.fn.executable(cmd[1]) ~= 1 then
    health.error(('`%s` not found'):format(cmd[1] or '(none)'), {
      "install the server: in a checkout of infill, python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[coder]'",
      "or give its path: require('infill').setup({ cmd = { '/path/to/infill/.venv/bin/infill', 'serve' } })",
    })
    return nil
  end
  local base = base_cmd(cmd)
  local version = run(base, '--version')
  local text = version and vim.trim(version.stdout or '') or ''
  if not version or version.code ~= 0 or text == '' then
    health.error('the server does not run: ' .. (version and vim.trim(version.stderr or '') or 'no answer'))
    return nil
  end
  local server_version = text:match('([%d%.]+%S*)$') or text
  if server_version == infill.version then
    health.ok(('server found: %s (the plugin is %s)'):format(text, infill.version))
  else
    health.warn(('server %s, plugin %s: they come from different releases'):format(server_version, infill.version),
      { 'update both from the same checkout, then :InfillRestart' })
  end
  return base
end

local function check_device(base)
  local doctor = run(base, 'doctor', '--json')
  local ok, report = pcall(vim.json.decode, doctor and doctor.stdout or '')
  if not ok or type(report) ~= 'table' then
    health.warn('`infill doctor --json` gave no report: ' .. (doctor and vim.trim(doctor.stderr or '') or ''))
    return
  end
  health.ok(('device: %s (%s)'):format(report.device, report.device_reason or ''))
  if report.default_model == nil or report.default_model == vim.NIL then
    health.error('no model installed: ' .. tostring(report.problem), {
      "in the checkout: pip install -e '.[coder]' (the default model)",
    })
  elseif report.converted then
    health.ok(('default model: %s (%s), converted in %s'):format(report.default_model, report.precision, report.cache))
  else
    health.warn(('default model: %s, not converted yet: the first start takes 2-4 minutes'):format(
      report.default_model), { 'run `infill model prepare` once in a shell to do it ahead' })
  end
end

local function check_running(infill)
  local status = infill.status()
  if not status.running then
    health.info('not running: ' .. (status.problem or 'no buffer of a served filetype is open'))
    return
  end
  health.ok(('running (client %d), root %s'):format(status.client_id, status.root or '-'))
  local model = status.model
  if model.state == 'ready' then
    health.ok('model ready: ' .. (model.message or ''))
  elseif model.state == 'failed' then
    health.error('model failed: ' .. (model.message or ''), { ':InfillStatus, then :InfillRestart' })
  else
    health.info(('model %s%s%s'):format(model.state, model.percentage and (' ' .. model.percentage .. '%') or '',
      model.message and (': ' .. model.message) or ''))
  end
  local index = infill.index_state()
  if not index then
    health.info('search index: not started')
  elseif index.done then
    health.ok('search index: ' .. (index.message or 'done'))
  else
    health.info(('search index: indexing%s%s'):format(index.percentage and (' ' .. index.percentage .. '%') or '',
      index.message and (': ' .. index.message) or ''))
  end
  health.info('completion: ' .. status.completion)
end

function M.check()
  local infill = require('infill')
  health.start('infill ' .. infill.version)
  if vim.fn.has('nvim-0.11') ~= 1 then
    health.error('Neovim 0.11 or newer is needed (vim.lsp.config)')
    return
  end
  if infill.has_inline() then
    health.ok('Neovim ' .. tostring(vim.version()) .. ': ghost text (vim.lsp.inline_completion)')
  else
    health.warn('Neovim ' .. tostring(vim.version()) .. ': no ghost text before 0.12; completion items instead')
  end
  health.start('infill: server')
  local base = check_server(infill)
  if base then
    check_device(base)
  end
  health.start('infill: running server')
  check_running(infill)
end

return M
