--- Ghost-text keys and state on top of Neovim's `vim.lsp.inline_completion` (0.12): accept all, a word
--- or a line; a `<Tab>` that falls through to the mapping it replaced (nvim-cmp, luasnip, Neovim's
--- snippet jump) when no suggestion shows; ghost text hidden while the popup menu is open; a manual
--- trigger; and the pending state for a statusline or a "…" mark.
---
--- Neovim keeps each buffer's inline-completion state in a private object (the "completor"). Showing a
--- suggestion again after a partial accept, asking on a key and hiding under the popup menu need it; each
--- use goes through `completor()` and degrades to doing less (never an error) if Neovim changes it.

local M = {}

local api = vim.api
local GHOST_NS = api.nvim_create_namespace('nvim.lsp.inline_completion')
local PENDING_NS = api.nvim_create_namespace('infill.pending')
local METHOD = 'textDocument/inlineCompletion'

--- Per buffer: the mappings our keys replaced, and the inline-completion requests in flight.
local buffers = {} ---@type table<integer, {previous: table<string, table>, pending: table<integer, true>}>

local function buf_state(bufnr)
  buffers[bufnr] = buffers[bufnr] or { previous = {}, pending = {} }
  return buffers[bufnr]
end

--- Neovim's inline-completion object for `bufnr`, with its `show` wrapped to stay hidden under the popup
--- menu; nil if this Neovim has none (or keeps it elsewhere).
---@param bufnr integer
---@return table?
local function completor(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local ok, capability = pcall(function()
    return vim.lsp._capability.all.inline_completion.active[bufnr]
  end)
  if not ok or type(capability) ~= 'table' then
    return nil
  end
  if not rawget(capability, '_infill_wrapped') and type(capability.show) == 'function' then
    local show = capability.show
    capability.show = function(self, ...)
      if vim.fn.pumvisible() == 1 then
        return self:hide()
      end
      return show(self, ...)
    end
    capability._infill_wrapped = true
  end
  return capability
end
M.completor = completor

--- Whether a suggestion is on screen in `bufnr` (ghost text drawn; not while the popup menu is open).
---@param bufnr integer?
---@return boolean
function M.visible(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  if vim.fn.pumvisible() == 1 then
    return false
  end
  return #api.nvim_buf_get_extmarks(bufnr, GHOST_NS, 0, -1, { limit = 1 }) > 0
end

--------------------------------------------------------------------------------------------------
-- Fall through to the mapping we replaced
--------------------------------------------------------------------------------------------------

local function feed(keys, remap)
  api.nvim_feedkeys(keys, remap and 'im' or 'in', false)
end

--- Do what `map` (a `maparg(..., true)` dict) would have done for `key`; a plain `key` when there was none.
---@param key string
---@param map table?
local function run_previous(key, map)
  local termcodes = function(s)
    return api.nvim_replace_termcodes(s, true, false, true)
  end
  if not map or vim.tbl_isempty(map) then
    return feed(termcodes(key), false)
  end
  local remap = map.noremap ~= 1
  if map.callback then
    local result = map.callback()
    if map.expr == 1 and type(result) == 'string' then
      feed(map.replace_keycodes == 1 and termcodes(result) or result, remap)
    end
    return
  end
  local rhs = (map.rhs or ''):gsub('<[Ss][Ii][Dd]>', '<SNR>' .. (map.sid or 0) .. '_')
  if map.expr == 1 then
    rhs = vim.api.nvim_eval(rhs)
    return feed(type(rhs) == 'string' and termcodes(rhs) or '', remap)
  end
  feed(termcodes(rhs), remap)
end

--- Map `lhs` in insert mode for `bufnr`: `action()` runs when a suggestion shows and returns true if it
--- used the key; otherwise the key does what it did before (captured once, so a re-attach keeps it).
local function map_with_fallback(bufnr, lhs, desc, action)
  local state = buf_state(bufnr)
  if state.previous[lhs] == nil then
    local previous = vim.fn.maparg(lhs, 'i', false, true)
    local ours = type(previous.desc) == 'string' and previous.desc:find('^infill:')
    state.previous[lhs] = ours and {} or previous
  end
  vim.keymap.set('i', lhs, function()
    if M.visible(bufnr) and action() then
      return
    end
    run_previous(lhs, state.previous[lhs])
  end, { buffer = bufnr, desc = desc })
end

--------------------------------------------------------------------------------------------------
-- Partial accept
--------------------------------------------------------------------------------------------------

--- The first word of `text` (leading blanks included; a line break with the next line's indent is one
--- word), or its first line (a leading line break takes the line after it).
---@param text string
---@param unit 'word'|'line'
---@return string
function M.take(text, unit)
  if unit == 'line' then
    return text:match('^\n[^\n]*') or text:match('^[^\n]*')
  end
  return text:match('^\n[ \t]*') or text:match('^[ \t]*[%w_]+') or text:match('^[ \t]*[^%w_%s]+')
    or text:match('^%s+') or text
end

--- Insert the next word or line of the shown suggestion, and keep showing the rest of it.
---@param unit 'word'|'line'
---@return boolean whether a suggestion was there to take from
function M.accept_part(unit)
  local bufnr = api.nvim_get_current_buf()
  return vim.lsp.inline_completion.get({
    bufnr = bufnr,
    on_accept = function(item)
      local text = item.insert_text
      if type(text) ~= 'string' then -- a snippet: all or nothing
        return vim.snippet.expand(text.value)
      end
      local row, col = unpack(api.nvim_win_get_cursor(0))
      local typed = ''
      if item.range then
        local start = item.range.start
        if start.row ~= row - 1 or start.col > col then
          return -- the cursor left the suggestion
        end
        typed = api.nvim_get_current_line():sub(start.col + 1, col)
      end
      if text:sub(1, #typed) ~= typed then
        return
      end
      local rest = text:sub(#typed + 1)
      local part = M.take(rest, unit)
      local lines = vim.split(part, '\n', { plain = true })
      api.nvim_buf_set_text(bufnr, row - 1, col, row - 1, col, lines)
      local new_row = row - 1 + #lines
      local new_col = (#lines == 1 and col or 0) + #lines[#lines]
      api.nvim_win_set_cursor(0, { new_row, new_col })
      M.show_rest(bufnr, item.client_id, rest:sub(#part + 1))
    end,
  })
end

--- Show `text` as the suggestion at the cursor at once (the server's next answer replaces it).
function M.show_rest(bufnr, client_id, text)
  local c = completor(bufnr)
  local client = vim.lsp.get_client_by_id(client_id)
  if text == '' or not c or not client or type(c.client_state[client_id]) ~= 'table' then
    return
  end
  local pos = vim.lsp.util.make_position_params(0, client.offset_encoding).position
  c.client_state[client_id].items = { { insertText = text, range = { start = pos, ['end'] = pos } } }
  pcall(c.select, c, 1)
end

--- Ask for a suggestion at the cursor now (an explicit request: the server may offer several).
---@return boolean whether the request could be made
function M.trigger()
  local bufnr = api.nvim_get_current_buf()
  local c = completor(bufnr)
  if not c or type(c.request) ~= 'function' then
    return false
  end
  c:request(vim.lsp.protocol.InlineCompletionTriggerKind.Invoked)
  return true
end

--------------------------------------------------------------------------------------------------
-- Pending state
--------------------------------------------------------------------------------------------------

--- How many inline-completion requests of `bufnr` wait for the server.
---@param bufnr integer?
---@return integer
function M.pending(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  return vim.tbl_count((buffers[bufnr] or { pending = {} }).pending)
end

local function draw_pending(bufnr, show_mark)
  api.nvim_buf_clear_namespace(bufnr, PENDING_NS, 0, -1)
  if show_mark and M.pending(bufnr) > 0 and api.nvim_get_current_buf() == bufnr then
    local row = api.nvim_win_get_cursor(0)[1] - 1
    api.nvim_buf_set_extmark(bufnr, PENDING_NS, row, 0, {
      virt_text = { { '…', 'Comment' } }, virt_text_pos = 'eol', hl_mode = 'combine',
    })
  end
end

--- `LspRequest` handler: count the inline-completion requests in flight per buffer.
---@param ev table the autocmd event
---@param show_mark boolean draw the "…" mark
function M.on_request(ev, show_mark)
  local request = ev.data.request or {}
  if request.method ~= METHOD then
    return
  end
  local bufnr = request.bufnr or ev.buf
  local pending = buf_state(bufnr).pending
  if request.type == 'pending' then
    pending[ev.data.request_id] = true
  else
    pending[ev.data.request_id] = nil
  end
  draw_pending(bufnr, show_mark)
  vim.cmd.redrawstatus({ bang = true, mods = { emsg_silent = true } })
end

--------------------------------------------------------------------------------------------------
-- Attach
--------------------------------------------------------------------------------------------------

--- Map the configured keys for `bufnr` and hide ghost text under the popup menu.
---@param bufnr integer
---@param keys table { accept, accept_word, accept_line, next, prev, trigger } (false = unmapped)
function M.attach(bufnr, keys)
  if keys.accept then
    map_with_fallback(bufnr, keys.accept, 'infill: accept the suggestion', function()
      return vim.lsp.inline_completion.get({ bufnr = bufnr })
    end)
  end
  if keys.accept_word then
    map_with_fallback(bufnr, keys.accept_word, 'infill: accept the next word', function()
      return M.accept_part('word')
    end)
  end
  if keys.accept_line then
    map_with_fallback(bufnr, keys.accept_line, 'infill: accept the next line', function()
      return M.accept_part('line')
    end)
  end
  if keys.next then
    vim.keymap.set('i', keys.next, function()
      vim.lsp.inline_completion.select({ bufnr = bufnr, count = 1 })
    end, { buffer = bufnr, desc = 'infill: next suggestion' })
  end
  if keys.prev then
    vim.keymap.set('i', keys.prev, function()
      vim.lsp.inline_completion.select({ bufnr = bufnr, count = -1 })
    end, { buffer = bufnr, desc = 'infill: previous suggestion' })
  end
  if keys.trigger then
    vim.keymap.set('i', keys.trigger, M.trigger, { buffer = bufnr, desc = 'infill: suggest now' })
  end
  local group = api.nvim_create_augroup('infill.inline.' .. bufnr, { clear = true })
  api.nvim_create_autocmd({ 'InsertEnter', 'CompleteChanged' }, {
    group = group,
    buffer = bufnr,
    callback = function(ev)
      local c = completor(bufnr) -- wraps `show` once Neovim has made the object
      if ev.event == 'CompleteChanged' and c then
        c:hide()
      elseif ev.event == 'CompleteChanged' then
        api.nvim_buf_clear_namespace(bufnr, GHOST_NS, 0, -1)
      end
    end,
  })
  api.nvim_create_autocmd({ 'InsertLeave', 'BufUnload' }, {
    group = group,
    buffer = bufnr,
    callback = function(ev)
      if ev.event == 'BufUnload' then
        buffers[bufnr] = nil
      else
        api.nvim_buf_clear_namespace(bufnr, PENDING_NS, 0, -1)
      end
    end,
  })
end

return M
