--- infill for Neovim: a thin client for the `infill serve` language server.
---
--- The server does all the work (completion, edits, search); this file only wires it into Neovim:
--- it registers the server with `vim.lsp.config`/`vim.lsp.enable`, turns on the built-in inline
--- completion (Neovim 0.12) or completion items (0.11) with the keys of `infill.inline`, shows edits as a
--- diff to accept or reject (`infill.preview`) before they land, puts search results in a picker, and adds
--- :InfillEdit, :InfillCancel, :InfillSearch, :InfillStatus, :InfillToggle, :InfillRestart and
--- `:checkhealth infill`. See `:help infill`.

local M = {}

local api = vim.api
local inline = require('infill.inline')
local preview = require('infill.preview')
local NAME = 'infill'

--- The plugin's release: the same as the server's (`infill --version`) and the VS Code extension's.
M.version = '0.1.0'

--- Defaults; every key can be overridden in `setup()`.
M.defaults = {
  --- Command that starts the server; `{ 'infill', 'serve' }` needs `infill` on $PATH.
  cmd = nil,
  --- Filetypes the server attaches to: every language it has a grammar for (lsp_server/languages.py).
  filetypes = { 'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go', 'rust',
    'java', 'c', 'cpp', 'ruby' },
  root_markers = { '.git', 'pyproject.toml', 'package.json', 'go.mod', 'Cargo.toml', '.hg' },
  --- Sent as `initializationOptions` and `workspace/didChangeConfiguration` (model, device, max tokens, and
  --- `backend = { url = 'https://gpu-box:8080', kind = 'llama.cpp' }` for a team's serving engine …).
  settings = {},
  --- Ghost-text inline completion (Neovim 0.12+). On 0.11 completion items are used instead.
  inline = true,
  --- Insert-mode keys; set one to false to leave it unmapped. accept, accept_word and accept_line fall
  --- through to what the key did before (nvim-cmp, luasnip, a plain Tab) when no suggestion shows.
  keys = { accept = '<Tab>', accept_word = '<M-Right>', accept_line = '<M-C-Right>', next = '<M-]>',
    prev = '<M-[>', trigger = '<M-\\>' },
  --- A "…" after the line while a suggestion is being asked for (the statusline function says it too).
  pending_mark = false,
  --- Show an edit as a diff to accept or reject before it is applied: 'float', 'split', or false to apply
  --- it at once.
  edit_preview = 'float',
  --- With a preview: open it as soon as the server writes the first line and show the code growing
  --- (`infill/editStream`); false waits for the whole edit.
  edit_stream = true,
  --- Keys (normal and visual mode) that accept or reject the previewed edit from the edited buffer and in
  --- the preview, mapped only while it is open: the preview never takes the cursor. false: unmapped.
  edit_keys = { accept = '<M-y>', reject = '<M-n>' },
  --- Where :InfillSearch results go: 'auto' (Telescope, else fzf-lua, else vim.ui.select), 'telescope',
  --- 'fzf-lua', 'select' or 'quickfix'.
  search_picker = 'auto',
  --- Completion items (`textDocument/completion`) when inline completion is unavailable.
  completion_fallback = true,
  --- How many results :InfillSearch asks for.
  search_limit = 20,
}

M.config = vim.deepcopy(M.defaults)

--- Progress and model state, fed by `$/progress` so :InfillStatus can say what the server is doing.
local state = {
  progress = {}, ---@type table<string|integer, {title: string?, message: string?, percentage: integer?, done: boolean}>
  model = nil, ---@type {state: string, message: string?, percentage: integer?}?
  inline_enabled = true,
  problem = nil, ---@type string? why the server is not running (missing executable, exit code)
  ---@type table<integer, {client: vim.lsp.Client, on_done: function?, bufnr: integer, title: string, layout: string|false}>
  edits = {}, -- edits in flight, by request id
}

--- The running infill client (for `bufnr` if given), or nil.
---@param bufnr integer?
---@return vim.lsp.Client?
function M.client(bufnr)
  return vim.lsp.get_clients({ name = NAME, bufnr = bufnr })[1]
end

--- Whether this Neovim has the built-in ghost-text inline completion (0.12+).
---@return boolean
function M.has_inline()
  return vim.lsp.inline_completion ~= nil and type(vim.lsp.inline_completion.enable) == 'function'
end

local function notify(msg, level)
  vim.notify('infill: ' .. msg, level or vim.log.levels.INFO)
end

--- The client that should serve a request from `bufnr`: the attached one, else any running one.
---@return vim.lsp.Client?
local function require_client(bufnr)
  local client = M.client(bufnr) or M.client()
  if not client then
    notify('the server is not running (is `infill` installed? see :help infill-install)', vim.log.levels.ERROR)
  end
  return client
end

local function server_has_command(client, command)
  local provider = client.server_capabilities.executeCommandProvider
  return type(provider) == 'table' and vim.list_contains(provider.commands or {}, command)
end

--------------------------------------------------------------------------------------------------
-- Attach: inline completion, keys, completion fallback
--------------------------------------------------------------------------------------------------

--- Neovim inserts only the first word of a plain-text completion item (`^%S*` of its textEdit); when
--- an infill item is accepted, put in the whole suggestion it stands for.
---@param client_id integer
---@param bufnr integer
local function complete_whole_suggestion(client_id, bufnr)
  api.nvim_create_autocmd('CompleteDone', {
    group = api.nvim_create_augroup('infill.complete.' .. bufnr, { clear = true }),
    buffer = bufnr,
    callback = function()
      local item = vim.v.completed_item
      local lsp_data = vim.tbl_get(item or {}, 'user_data', 'nvim', 'lsp') or {}
      local edit = vim.tbl_get(lsp_data, 'completion_item', 'textEdit')
      local client = vim.lsp.get_client_by_id(client_id)
      local reason = vim.v.event.reason -- 0.10+: accept | cancel | discard
      if lsp_data.client_id ~= client_id or not edit or not client or (reason and reason ~= 'accept') then
        return
      end
      -- Change the buffer once completion mode has ended (editing inside CompleteDone confuses it).
      vim.schedule(function()
        if api.nvim_get_current_buf() ~= bufnr then
          return
        end
        local row, col = unpack(api.nvim_win_get_cursor(0))
        local start = (edit.range or edit.insert).start
        local line = api.nvim_get_current_line()
        local start_col = vim.str_byteindex(line, client.offset_encoding, start.character, false)
        local inserted = line:sub(start_col + 1, col)
        if start.line ~= row - 1 or inserted ~= item.word or inserted == edit.newText then
          return -- not the state the item was accepted in, or already whole
        end
        local lines = vim.split(edit.newText, '\n', { plain = true })
        api.nvim_buf_set_text(bufnr, row - 1, start_col, row - 1, col, lines)
        api.nvim_win_set_cursor(0, { row - 1 + #lines, (#lines == 1 and start_col or 0) + #lines[#lines] })
      end)
    end,
  })
end

--- Whether the user's settings turn completion off for this buffer's filetype.
---@param bufnr integer
---@return boolean
local function language_disabled(bufnr)
  local settings = M.config.settings or {}
  local disabled = settings.disabledLanguages or settings.disabled_languages or {}
  return settings.enable == false or vim.list_contains(disabled, vim.bo[bufnr].filetype)
end

--- The cursor rests once it has not moved for this long: longer than the gap between two keystrokes.
local CURSOR_REST_MS = 250
local cursor_timers = {} ---@type table<integer, uv.uv_timer_t>

--- Tell the server where the cursor came to rest in `bufnr` (`infill/didMoveCursor`, editors/README.md), so
--- it warms its cache there before the first keystroke: LSP says where the user types, never where they look.
---@param bufnr integer
local function watch_cursor(bufnr)
  local timer = cursor_timers[bufnr] or (vim.uv or vim.loop).new_timer()
  cursor_timers[bufnr] = timer
  local function send()
    if api.nvim_get_current_buf() ~= bufnr then
      return -- another buffer has the cursor now (and a timer of its own)
    end
    local client = M.client(bufnr)
    local completing = state.inline_enabled or not M.config.inline -- :InfillToggle turned ghost text off
    if client and completing then
      client:notify('infill/didMoveCursor', vim.lsp.util.make_position_params(0, client.offset_encoding))
    end
  end
  local function restart()
    timer:stop()
    timer:start(CURSOR_REST_MS, 0, vim.schedule_wrap(send))
  end
  local group = api.nvim_create_augroup('infill.cursor.' .. bufnr, { clear = true })
  api.nvim_create_autocmd({ 'CursorMoved', 'CursorMovedI', 'BufEnter' }, {
    group = group,
    buffer = bufnr,
    callback = restart,
  })
  api.nvim_create_autocmd('BufUnload', {
    group = group,
    buffer = bufnr,
    once = true,
    callback = function()
      cursor_timers[bufnr] = nil
      timer:stop()
      timer:close()
      pcall(api.nvim_del_augroup_by_id, group)
    end,
  })
  restart() -- where the cursor is when the buffer opens
end

local function on_attach(client, bufnr)
  if language_disabled(bufnr) then
    return -- edits and search still work; no completion requests at all
  end
  watch_cursor(bufnr)
  if M.config.inline and M.has_inline() then
    -- A buffer marker: Neovim starts the capability for this buffer right after LspAttach.
    vim.lsp.inline_completion.enable(state.inline_enabled, { bufnr = bufnr })
    inline.attach(bufnr, M.config.keys or {})
  elseif M.config.completion_fallback and vim.lsp.completion and client:supports_method('textDocument/completion') then
    -- One suggestion is one item: show the menu for it, selected but not inserted until <C-y>.
    pcall(function()
      vim.bo[bufnr].completeopt = 'menuone,noinsert,popup'
    end)
    vim.lsp.completion.enable(true, client.id, bufnr, { autotrigger = true })
    complete_whole_suggestion(client.id, bufnr)
  end
end

--------------------------------------------------------------------------------------------------
-- Progress → status
--------------------------------------------------------------------------------------------------

local function on_progress(ev)
  local client = vim.lsp.get_client_by_id(ev.data.client_id)
  if not client or client.name ~= NAME then
    return
  end
  local params = ev.data.params or {}
  local value = params.value
  if type(value) ~= 'table' then
    return
  end
  local entry = state.progress[params.token] or { done = false }
  entry.title = value.title or entry.title
  entry.message = value.message or entry.message
  entry.percentage = value.percentage or entry.percentage
  entry.done = value.kind == 'end'
  state.progress[params.token] = entry
  if entry.title and entry.title:find('index', 1, true) then
    state.index = entry
  end
  if entry.title and entry.title:find('model', 1, true) then
    local failed = entry.done and (entry.message or ''):find('fail', 1, true)
    state.model = {
      state = failed and 'failed' or (entry.done and 'ready' or 'loading'),
      message = entry.message,
      percentage = entry.percentage,
    }
  end
end

--- What the plugin knows about the server: running?, model state, work in progress, inline mode.
---@return table
function M.status()
  local client = M.client()
  local work = {}
  for _, p in pairs(state.progress) do
    if not p.done then
      table.insert(work, p)
    end
  end
  local mode = 'off'
  if language_disabled(api.nvim_get_current_buf()) then
    mode = 'off for ' .. vim.bo.filetype .. ' (settings)'
  elseif M.config.inline and M.has_inline() then
    mode = state.inline_enabled and 'inline' or 'off'
  elseif M.config.completion_fallback then
    mode = 'completion items'
  end
  return {
    problem = not client and state.problem or nil,
    running = client ~= nil and not client:is_stopped(),
    client_id = client and client.id,
    root = client and client.root_dir,
    cmd = M.config.cmd,
    model = state.model or { state = client and 'starting' or 'stopped' },
    work = work,
    completion = mode,
    nvim = tostring(vim.version()),
  }
end

--- The latest indexing progress ({message, percentage, done}), or nil before any.
---@return table?
function M.index_state()
  return state.index
end

--- A short state for the statusline (`%{v:lua.require'infill'.statusline()}`): '' where infill does not
--- serve the buffer, 'infill …' while a suggestion is asked for, 'infill: editing…', 'infill 42%' while
--- the model loads, 'infill: off', 'infill: error', else 'infill'.
---@return string
function M.statusline()
  local bufnr = api.nvim_get_current_buf()
  if not M.client(bufnr) then
    return state.problem and 'infill: error' or ''
  end
  local model = state.model or { state = 'starting' }
  if model.state == 'failed' then
    return 'infill: error'
  elseif next(state.edits) then
    return 'infill: editing…'
  elseif inline.pending(bufnr) > 0 then
    return 'infill …'
  elseif model.state ~= 'ready' then
    return model.percentage and ('infill %d%%'):format(model.percentage) or 'infill: loading'
  elseif not state.inline_enabled or language_disabled(bufnr) then
    return 'infill: off'
  end
  return 'infill'
end

local function show_status()
  local s = M.status()
  local lines = {}
  if s.running then
    table.insert(lines, ('infill: running (client %d), root %s'):format(s.client_id, s.root or '-'))
  else
    table.insert(lines, ('infill: not running%s; command: %s'):format(
      s.problem and (' (' .. s.problem .. ')') or '', table.concat(s.cmd or {}, ' ')))
    table.insert(lines, '  :InfillRestart starts it again; :help infill-troubleshooting')
  end
  local m = s.model
  local pct = m.percentage and (' %d%%'):format(m.percentage) or ''
  table.insert(lines, ('  model: %s%s%s'):format(m.state, pct, m.message and (' - ' .. m.message) or ''))
  for _, w in ipairs(s.work) do
    local wp = w.percentage and (' %d%%'):format(w.percentage) or ''
    table.insert(lines, ('  working: %s%s%s'):format(w.title or '?', wp, w.message and (' - ' .. w.message) or ''))
  end
  table.insert(lines, ('  completion: %s (Neovim %s)'):format(s.completion, s.nvim))
  local client = M.client()
  if client and not client:is_stopped() then -- the server's counters, if it answers quickly
    local reply = client:request_sync('infill/stats', vim.empty_dict(), 500)
    local stats = reply and reply.result
    if type(stats) == 'table' and stats.requests then
      table.insert(lines, ('  requests: %d, answered from typed-through cache: %d'):format(
        stats.requests, stats.typed_through or 0))
    end
  end
  vim.notify(table.concat(lines, '\n'))
end

--------------------------------------------------------------------------------------------------
-- :InfillEdit
--------------------------------------------------------------------------------------------------

--- The LSP range a command was run on: the charwise visual selection, whole lines, or the cursor.
---@param bufnr integer
---@param opts table user-command opts (range, line1, line2)
---@param encoding string the client's position encoding
---@return lsp.Range
function M.command_range(bufnr, opts, encoding)
  local util = vim.lsp.util
  if (opts.range or 0) == 0 then
    local row, col = unpack(api.nvim_win_get_cursor(0))
    local pos = { line = row - 1, character = util.character_offset(bufnr, row - 1, col, encoding) }
    return { start = pos, ['end'] = pos }
  end
  local s = api.nvim_buf_get_mark(bufnr, '<')
  local e = api.nvim_buf_get_mark(bufnr, '>')
  if vim.fn.visualmode() == 'v' and s[1] == opts.line1 and e[1] == opts.line2 then
    local last = api.nvim_buf_get_lines(bufnr, e[1] - 1, e[1], true)[1]
    -- `'>` is the first byte of the last selected character: include all of it, even if multibyte.
    local end_byte = e[2] < #last and (e[2] + 1 + vim.str_utf_end(last, e[2] + 1)) or #last
    return {
      start = { line = s[1] - 1, character = util.character_offset(bufnr, s[1] - 1, s[2], encoding) },
      ['end'] = { line = e[1] - 1, character = util.character_offset(bufnr, e[1] - 1, end_byte, encoding) },
    }
  end
  local line_count = api.nvim_buf_line_count(bufnr)
  if opts.line2 < line_count then
    return { start = { line = opts.line1 - 1, character = 0 }, ['end'] = { line = opts.line2, character = 0 } }
  end
  local last = api.nvim_buf_get_lines(bufnr, line_count - 1, line_count, true)[1]
  return {
    start = { line = opts.line1 - 1, character = 0 },
    ['end'] = { line = line_count - 1, character = util.character_offset(bufnr, line_count - 1, #last, encoding) },
  }
end

--- Apply an edit the server wrote for version `version` of `bufnr` (default: the version in the edit),
--- unless the buffer changed since.
---@return boolean applied
local function apply_edit(client, bufnr, edit, version)
  version = version or vim.tbl_get(edit, 'documentChanges', 1, 'textDocument', 'version')
  if version and vim.lsp.util.buf_versions[bufnr] ~= version then
    notify('the buffer changed since the edit was asked for; nothing was applied', vim.log.levels.WARN)
    return false
  end
  vim.lsp.util.apply_workspace_edit(edit, client.offset_encoding)
  notify('edit applied (u to undo)')
  return true
end

--- Stop edit `id` (`$/cancelRequest`): the server stops generating and applies nothing.
---@return boolean cancelled false when it was no longer running
local function cancel_edit(id)
  local edit = state.edits[id]
  if not edit then
    return false
  end
  edit.client:cancel_request(id) -- Neovim drops the reply to a cancelled request: report it here
  state.edits[id] = nil
  preview.dismiss(id)
  if edit.on_done then
    edit.on_done({ code = -32800, message = 'cancelled' }, nil)
  end
  return true
end

--- `infill/editStream`: the code of an edit this plugin asked for, as the server writes it, shown in the
--- edit's preview (opened on the first one). The command's answer says how the edit ended.
local function on_edit_stream(_, params, ctx)
  local edit = type(params) == 'table' and state.edits[params.id]
  if not edit or not edit.layout or edit.client.id ~= ctx.client_id or params.done and params.error then
    return
  end
  preview.stream(params.text or '', {
    id = params.id, title = edit.title, layout = edit.layout, filetype = vim.bo[edit.bufnr].filetype,
    source = edit.bufnr, source_keys = M.config.edit_keys or {},
  }, function()
    if cancel_edit(params.id) then
      notify('edit cancelled; nothing was changed')
    end
  end)
end

--- Run `infill.edit` with `args` ({uri, range, version, instruction, preset?, …}). With `edit_preview`
--- on, the server only writes the edit (apply=false) and it is shown as a diff to accept or reject (the
--- code streaming into it while it is written); otherwise the server applies it itself
--- (`workspace/applyEdit`, versioned).
---@param client vim.lsp.Client
---@param bufnr integer
---@param args table
---@param on_done fun(err: table?, result: any)?
local function run_edit(client, bufnr, args, on_done)
  local layout = M.config.edit_preview
  args = vim.tbl_extend('force', args, { apply = not layout })
  notify('editing… (:InfillCancel stops it)')
  local title = 'infill: ' .. (args.preset or args.instruction or 'edit'):sub(1, 40)
  local request_id
  local params = { command = 'infill.edit', arguments = { args } }
  local _, id = client:request('workspace/executeCommand', params, function(err, result)
    if request_id then
      state.edits[request_id] = nil
    end
    if err and err.code == -32800 then -- replaced by a newer edit of this buffer
      preview.dismiss(request_id)
      notify(err.message or 'edit cancelled; nothing was changed')
    elseif err then
      local message = err.message or vim.inspect(err)
      preview.fail(request_id, message)
      notify('edit failed: ' .. message, vim.log.levels.ERROR)
    elseif type(result) == 'table' and result.applied then
      notify('edit applied (u to undo)')
    elseif type(result) == 'table' and layout and result.edit then
      local opts = { title = title, layout = layout, id = request_id, source = bufnr,
        source_keys = M.config.edit_keys or {} }
      preview.open(result.diff or '', opts, function(accepted)
        if accepted then
          apply_edit(client, bufnr, result.edit, args.version)
        else
          notify('edit discarded; nothing was changed')
        end
      end)
    end
    if on_done then
      on_done(err, result)
    end
  end, bufnr)
  request_id = id
  if id then
    state.edits[id] = { client = client, on_done = on_done, bufnr = bufnr, title = title, layout = layout }
  end
end

--- Ask the server to rewrite `range` of `bufnr` by `instruction`: previewed as a diff first (see
--- `edit_preview`), else applied by the server (versioned, so a buffer changed meanwhile refuses it).
---@param bufnr integer
---@param range lsp.Range
---@param instruction string
---@param opts {version: integer?, on_done: fun(err: table?, result: any)?}? version defaults to the buffer's
function M.edit(bufnr, range, instruction, opts)
  opts = opts or {}
  local client = require_client(bufnr)
  if not client then
    return
  end
  if vim.trim(instruction or '') == '' or not range then
    notify('an edit needs an instruction and a range', vim.log.levels.WARN)
    return
  end
  run_edit(client, bufnr, {
    uri = vim.uri_from_bufnr(bufnr),
    range = range,
    version = opts.version or vim.lsp.util.buf_versions[bufnr],
    instruction = instruction,
  }, opts.on_done)
end

--- Client side of the server's preset code actions ("Add docstring", …), which run `infill.edit`:
--- through `run_edit`, so they are previewed like :InfillEdit.
---@param command lsp.Command
---@param ctx table
local function preset_edit(command, ctx)
  local args = (command.arguments or {})[1]
  local client = vim.lsp.get_client_by_id(ctx.client_id)
  if type(args) ~= 'table' or not client then
    return
  end
  local bufnr = args.uri and vim.uri_to_bufnr(args.uri) or ctx.bufnr
  run_edit(client, bufnr, args)
end

--- Cancel the edits this plugin started for the current buffer that are still running
--- (`$/cancelRequest`), or with `all` those of every buffer; the server stops generating and applies
--- nothing. An edit's preview still open for the current buffer (its diff already shown) is rejected too.
---@param all boolean? every buffer's edits, not only the current one's
---@return integer how many were cancelled or rejected
function M.cancel(all)
  local bufnr = api.nvim_get_current_buf()
  local n, elsewhere = 0, 0
  for id, edit in pairs(state.edits) do
    if not all and edit.bufnr ~= bufnr then
      elsewhere = elsewhere + 1
    elseif cancel_edit(id) then
      n = n + 1
    end
  end
  if n > 0 then
    notify('edit cancelled; nothing was changed')
  end
  if preview.reject(bufnr) then -- says 'edit discarded' itself
    n = n + 1
  elseif n == 0 then
    local others = ('no edit is running in this buffer (%d in others: :InfillCancel! stops them)'):format(elsewhere)
    notify(elsewhere > 0 and others or 'no edit is running')
  end
  return n
end

--- Client side of the server's "Edit with instruction…" code action: ask, then run `infill.edit` on
--- the range and version the action was made for.
---@param command lsp.Command
---@param ctx table
local function edit_with_instruction(command, ctx)
  local args = (command.arguments or {})[1] or {}
  local bufnr = args.uri and vim.uri_to_bufnr(args.uri) or ctx.bufnr
  vim.ui.input({ prompt = 'infill instruction: ' }, function(input)
    if input then
      M.edit(bufnr, args.range, input, { version = args.version })
    end
  end)
end

local function edit_command(opts)
  local bufnr = api.nvim_get_current_buf()
  local client = require_client(bufnr)
  if not client then
    return
  end
  local range = M.command_range(bufnr, opts, client.offset_encoding)
  if opts.args ~= '' then
    M.edit(bufnr, range, opts.args)
    return
  end
  vim.ui.input({ prompt = 'infill instruction: ' }, function(input)
    if input then
      M.edit(bufnr, range, input)
    end
  end)
end

--------------------------------------------------------------------------------------------------
-- :InfillSearch
--------------------------------------------------------------------------------------------------

--- Quickfix items from an `infill.search` result (a list, or `{results = [...]}`), best first.
---@param result any
---@return table[]
function M.search_items(result)
  local hits = type(result) == 'table' and (result.results or result.items or result) or {}
  local items = {}
  for _, hit in ipairs(hits) do
    local loc = hit.location or hit
    local uri = loc.uri or loc.targetUri
    local range = loc.range or loc.targetSelectionRange
    if uri then
      local start = range and range.start or { line = 0, character = 0 }
      local snippet = hit.snippet or hit.text or hit.name or ''
      local first = vim.trim(vim.split(snippet, '\n', { plain = true })[1] or '')
      local score = tonumber(hit.score)
      table.insert(items, {
        filename = vim.uri_to_fname(uri),
        lnum = start.line + 1,
        col = start.character + 1,
        text = (score and ('[%.2f] '):format(score) or '') .. first,
      })
    end
  end
  return items
end

--- The picker `search_picker` names; 'auto' is Telescope or fzf-lua when installed, else vim.ui.select.
---@return 'telescope'|'fzf-lua'|'select'|'quickfix'
function M.picker()
  local choice = M.config.search_picker
  if choice and choice ~= 'auto' then
    return choice
  end
  if pcall(require, 'telescope.pickers') then
    return 'telescope'
  elseif pcall(require, 'fzf-lua') then
    return 'fzf-lua'
  end
  return 'select'
end

local function label(item)
  return ('%s:%d:%d: %s'):format(vim.fn.fnamemodify(item.filename, ':.'), item.lnum, item.col, item.text)
end

--- Open a search result (a quickfix-style item).
function M.jump(item)
  vim.cmd.edit(vim.fn.fnameescape(item.filename))
  pcall(api.nvim_win_set_cursor, 0, { item.lnum, math.max(0, item.col - 1) })
end

--- Let the user pick among the results, best first, in the configured picker.
---@param query string
---@param items table[] quickfix-style items from `search_items`
function M.pick(query, items)
  local kind = M.picker()
  if kind == 'telescope' then
    local pickers, finders = require('telescope.pickers'), require('telescope.finders')
    local conf = require('telescope.config').values
    pickers.new({}, {
      prompt_title = 'infill: ' .. query,
      finder = finders.new_table({ results = items, entry_maker = function(item)
        return { value = item, display = label(item), ordinal = label(item),
                 filename = item.filename, lnum = item.lnum, col = item.col }
      end }),
      sorter = conf.generic_sorter({}),
      previewer = conf.grep_previewer({}),
    }):find()
  elseif kind == 'fzf-lua' then
    local fzf = require('fzf-lua')
    fzf.fzf_exec(vim.tbl_map(label, items), {
      prompt = 'infill> ', previewer = 'builtin', actions = { ['default'] = fzf.actions.file_edit },
    })
  elseif kind == 'quickfix' then
    vim.cmd('botright copen')
  else
    vim.ui.select(items, { prompt = 'infill: ' .. query, format_item = label, kind = 'infill.search' },
      function(item)
        if item then
          M.jump(item)
        end
      end)
  end
end

--- Search the workspace for `query`: the results fill the quickfix list and open in the picker.
---@param query string
---@param on_done fun(items: table[]?)? called with the items, or nil when the search could not run
function M.search(query, on_done)
  on_done = on_done or function() end
  local client = require_client(api.nvim_get_current_buf())
  if not client then
    return on_done(nil)
  end
  if not server_has_command(client, 'infill.search') then
    notify('this server has no search (infill.search)', vim.log.levels.WARN)
    return on_done(nil)
  end
  local params = { command = 'infill.search', arguments = { { query = query, limit = M.config.search_limit } } }
  client:request('workspace/executeCommand', params, function(err, result)
    if err then
      notify('search failed: ' .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
      return on_done(nil)
    end
    local items = M.search_items(result)
    vim.fn.setqflist({}, ' ', { title = 'infill: ' .. query, items = items })
    if #items == 0 then
      notify('no results for ' .. query)
    else
      M.pick(query, items)
    end
    on_done(items)
  end)
end

--------------------------------------------------------------------------------------------------
-- setup
--------------------------------------------------------------------------------------------------

--- The checkout this plugin lives in (`<checkout>/editors/nvim/lua/infill/init.lua`).
local function checkout_dir()
  local here = debug.getinfo(1, 'S').source:sub(2)
  return vim.fn.fnamemodify(here, ':p:h:h:h:h:h')
end

--- How to start the server: the checkout's `.venv/bin/infill` (what README's install command makes), else
--- `infill` on $PATH, else the checkout's module with `python3`.
local function default_cmd()
  local venv = checkout_dir() .. '/.venv/bin/infill'
  if vim.fn.executable(venv) == 1 then
    return { venv, 'serve' }
  end
  if vim.fn.executable('infill') == 1 then
    return { 'infill', 'serve' }
  end
  return { 'python3', '-m', 'lsp_server.cli', 'serve' }
end

--- Whether the server command can run; the reason when it cannot.
---@return boolean, string?
local function check_cmd()
  local exe = M.config.cmd[1]
  if vim.fn.executable(exe) == 1 then
    return true
  end
  return false, ('`%s` not found; install the server (see :help infill-install) or set `cmd` in setup()'):format(exe)
end

--- Stop the server and start it again for every buffer it should serve (after a crash or an upgrade).
function M.restart()
  state.restarting = true
  for _, client in ipairs(vim.lsp.get_clients({ name = NAME })) do
    client:stop(true)
  end
  vim.wait(5000, function()
    return #vim.lsp.get_clients({ name = NAME }) == 0
  end, 50)
  state.restarting = false
  state.model, state.progress, state.problem, state.index = nil, {}, nil, nil
  local ok, why = check_cmd()
  if not ok then
    state.problem = why
    notify(why, vim.log.levels.ERROR)
    return
  end
  vim.lsp.enable(NAME) -- re-runs the FileType logic: attaches every matching buffer
end

local function toggle()
  state.inline_enabled = not state.inline_enabled
  if M.has_inline() then
    for _, client in ipairs(vim.lsp.get_clients({ name = NAME })) do
      for bufnr in pairs(client.attached_buffers) do
        vim.lsp.inline_completion.enable(state.inline_enabled and not language_disabled(bufnr), { bufnr = bufnr })
      end
    end
  end
  notify('inline completion ' .. (state.inline_enabled and 'on' or 'off'))
end

local function create_commands()
  api.nvim_create_user_command('InfillEdit', edit_command, {
    range = true, nargs = '?', desc = 'infill: rewrite the selection (or write at the cursor) from an instruction',
  })
  api.nvim_create_user_command('InfillSearch', function(opts)
    M.search(opts.args)
  end, { nargs = '+', desc = 'infill: search the code base in plain words' })
  api.nvim_create_user_command('InfillStatus', show_status, { desc = 'infill: server, model and progress state' })
  api.nvim_create_user_command('InfillToggle', toggle, { desc = 'infill: turn inline completion on or off' })
  api.nvim_create_user_command('InfillRestart', M.restart, { desc = 'infill: restart the server' })
  api.nvim_create_user_command('InfillCancel', function(opts)
    M.cancel(opts.bang)
  end, { bang = true, desc = "infill: stop this buffer's running edit (! every buffer's), or discard the previewed one" })
end

--- Register and enable the server, and add the commands. Call once from your config.
---@param opts table? overrides of `M.defaults`
function M.setup(opts)
  if vim.fn.has('nvim-0.11') ~= 1 then
    notify('needs Neovim 0.11 or newer (vim.lsp.config)', vim.log.levels.ERROR)
    return
  end
  M.config = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  if opts and opts.filetypes then -- lists replace, never merge
    M.config.filetypes = opts.filetypes
  end
  M.config.cmd = M.config.cmd or default_cmd()
  state.inline_enabled = M.config.inline

  local ghost = M.config.inline and M.has_inline()
  vim.lsp.config(NAME, {
    cmd = M.config.cmd,
    -- Without ghost text, hide the inline-completion capability: the server then sends the same
    -- suggestions as completion items (it sends none while the client shows them inline).
    before_init = not ghost and function(params)
      if params.capabilities and params.capabilities.textDocument then
        params.capabilities.textDocument.inlineCompletion = nil
      end
    end or nil,
    filetypes = M.config.filetypes,
    root_markers = M.config.root_markers,
    -- Lets the server offer "Edit with instruction…" as a code action (we ask for the text), and send
    -- an edit's code while it is written, for the preview.
    capabilities = { experimental = {
      infillEditWithInstruction = true,
      infillEditStream = (M.config.edit_preview and M.config.edit_stream) and true or nil,
    } },
    handlers = { ['infill/editStream'] = on_edit_stream },
    -- The preset code actions run infill.edit: here, so they are previewed like :InfillEdit.
    commands = { ['infill.edit'] = preset_edit },
    init_options = next(M.config.settings) and M.config.settings or vim.empty_dict(),
    -- A crash must not leave a stuck "loading" status: say how it ended.
    on_exit = function(code, signal)
      state.model, state.progress = nil, {}
      if (code ~= 0 or signal ~= 0) and not state.restarting then
        state.problem = ('the server exited with code %d, signal %d; its log: %s'):format(
          code, signal, vim.lsp.log.get_filename())
      end
    end,
    settings = { infill = next(M.config.settings) and M.config.settings or vim.empty_dict() },
  })

  local group = api.nvim_create_augroup('infill', { clear = true })
  api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == NAME then
        on_attach(client, ev.buf)
      end
    end,
  })
  api.nvim_create_autocmd('LspProgress', { group = group, callback = on_progress })
  api.nvim_create_autocmd('LspRequest', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == NAME then
        inline.on_request(ev, M.config.pending_mark)
      end
    end,
  })
  api.nvim_create_autocmd('LspDetach', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == NAME and #vim.lsp.get_clients({ name = NAME }) <= 1 then
        state.model = nil
        state.progress = {}
      end
    end,
  })
  create_commands()
  vim.lsp.commands['infill.editWithInstruction'] = edit_with_instruction
  local ok, why = check_cmd()
  if not ok then -- say it once, clearly, instead of an error on every file opened
    state.problem = why
    notify(why, vim.log.levels.ERROR)
    return
  end
  state.problem = nil
  vim.lsp.enable(NAME)
end

return M
