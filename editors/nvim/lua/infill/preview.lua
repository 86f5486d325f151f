--- The edit preview: the server's unified diff in a float or a split, with keys to accept or reject it.
--- While the server is still writing an edit (`infill/editStream`), the same window shows the code so far
--- and becomes the diff preview when the edit arrives. Nothing touches the edited buffer here; the caller
--- applies the edit on accept.

local M = {}

local api = vim.api

--- The preview on screen, if any (one at a time: a new edit replaces it, rejecting the old one).
--- `id` is the edit's request id (nil for a preview opened without one); `streaming` is true while the
--- code is still being written.
---@type {buf: integer, win: integer, id: any, streaming: boolean, close: fun(accepted: boolean)}?
M.current = nil

local HELP = 'a / <CR> accept · r / q / <Esc> reject'
local STREAM_HELP = 'writing… · q / <Esc> stop'
local FAIL_HELP = 'q / <Esc> close'
local KEYS = { accept = { 'a', '<CR>' }, reject = { 'r', 'q', '<Esc>' } }

local function lines_of(text)
  local lines = vim.split(text, '\n', { plain = true, trimempty = true })
  return #lines > 0 and lines or { '' }
end

--- The keys below are normal-mode keys: leave insert or visual mode first.
local function to_normal_mode()
  if api.nvim_get_mode().mode:match('^[vVsS\22\19]') then
    api.nvim_feedkeys(api.nvim_replace_termcodes('<Esc>', true, false, true), 'nx', false)
  end
  vim.cmd.stopinsert()
end

--- Size the window to its lines and title (a float is centred; while streaming it only grows, so it
--- does not jump as lines arrive).
local function fit(p, lines, title, grow_only)
  if p.layout == 'split' then
    vim.wo[p.win].winbar = title:gsub('%%', '%%%%')
    local height = math.min(#lines + 1, math.floor(vim.o.lines / 2))
    if not grow_only or height > api.nvim_win_get_height(p.win) then
      api.nvim_win_set_height(p.win, height)
    end
    return
  end
  local width = #title
  for _, l in ipairs(lines) do
    width = math.max(width, vim.fn.strdisplaywidth(l))
  end
  width = math.min(width + 2, vim.o.columns - 4)
  local height = math.max(1, math.min(#lines, vim.o.lines - 6))
  if grow_only then
    width, height = math.max(width, p.width or 0), math.max(height, p.height or 0)
  end
  p.width, p.height = width, height
  api.nvim_win_set_config(p.win, {
    relative = 'editor', title = title, title_pos = 'center', width = width, height = height,
    row = math.floor((vim.o.lines - height) / 2) - 1, col = math.floor((vim.o.columns - width) / 2),
  })
end

--- Show `lines` (as `filetype`) under `title` in the preview's window.
local function show(p, lines, filetype, title, grow_only)
  vim.bo[p.buf].modifiable = true
  api.nvim_buf_set_lines(p.buf, 0, -1, false, lines)
  vim.bo[p.buf].modifiable = false
  if vim.bo[p.buf].filetype ~= filetype then
    vim.bo[p.buf].filetype = filetype
  end
  fit(p, lines, (' %s — %s '):format(p.title, title), grow_only)
end

--- Map `lhs` keys of the preview buffer to `close(accepted)`, replacing the keys of an earlier state.
local function bind(p, keys)
  for _, lhs in ipairs(p.mapped or {}) do
    pcall(vim.keymap.del, 'n', lhs, { buffer = p.buf })
  end
  p.mapped = {}
  for _, lhs in ipairs(keys.accept or {}) do
    vim.keymap.set('n', lhs, function()
      p.close(true)
    end, { buffer = p.buf, nowait = true, desc = 'infill: apply this edit' })
    table.insert(p.mapped, lhs)
  end
  for _, lhs in ipairs(keys.reject or {}) do
    vim.keymap.set('n', lhs, function()
      p.close(false)
    end, { buffer = p.buf, nowait = true, desc = 'infill: discard this edit' })
    table.insert(p.mapped, lhs)
  end
end

--- A new preview window (replacing the one on screen); `on_close(accepted)` is called once when it closes.
local function create(opts, on_close)
  if M.current then
    M.current.close(false)
  end
  to_normal_mode()
  local buf = api.nvim_create_buf(false, true)
  vim.bo[buf].bufhidden = 'wipe'
  api.nvim_buf_set_name(buf, 'infill://preview/' .. buf)
  local win
  if opts.layout == 'split' then
    vim.cmd('botright 2split')
    win = api.nvim_get_current_win()
    api.nvim_win_set_buf(win, buf)
  else
    win = api.nvim_open_win(buf, true, {
      relative = 'editor', style = 'minimal', border = 'rounded', width = 1, height = 1, row = 0, col = 0,
    })
  end
  local p = { buf = buf, win = win, id = opts.id, layout = opts.layout, title = opts.title, streaming = false,
    on_close = on_close }
  function p.close(accepted)
    if p.done then
      return
    end
    p.done = true
    if M.current == p then
      M.current = nil
    end
    if api.nvim_win_is_valid(win) then
      pcall(api.nvim_win_close, win, true)
    end
    p.on_close(accepted)
  end
  api.nvim_create_autocmd('BufWipeout', { buffer = buf, once = true, callback = function()
    vim.schedule(function()
      p.close(false)
    end)
  end })
  M.current = p
  return p
end

--- The preview of edit `id` if it is on screen.
local function of(id)
  local p = M.current
  if p and id ~= nil and p.id == id and not p.done and api.nvim_win_is_valid(p.win) then
    return p
  end
end

--- Open a window showing `diff` (or turn edit `opts.id`'s streaming preview into it); call
--- `on_done(true)` when accepted, `on_done(false)` when rejected or closed any other way. Returns the window.
---@param diff string unified diff
---@param opts {title: string, layout: 'float'|'split', keys: {accept: string[], reject: string[]}?, id: any?}
---@param on_done fun(accepted: boolean)
---@return integer window
function M.open(diff, opts, on_done)
  local p = of(opts.id)
  if p then
    p.on_close, p.streaming, p.width, p.height = on_done, false, nil, nil
  else
    p = create(opts, on_done)
  end
  show(p, lines_of(vim.trim(diff) ~= '' and diff or '(no change)'), 'diff', HELP, false)
  bind(p, opts.keys or KEYS)
  return p.win
end

--- Show the code of edit `opts.id` written so far, opening the preview on the first call and updating it
--- on the next ones; `on_stop()` is called if the user closes it before the edit arrives. Returns the window.
---@param text string the replacement so far
---@param opts {title: string, layout: 'float'|'split', filetype: string?, id: any, keys: {reject: string[]}?}
---@param on_stop fun()
---@return integer window
function M.stream(text, opts, on_stop)
  local p = of(opts.id)
  if not (p and p.streaming) then
    p = create(opts, function()
      on_stop()
    end)
    p.streaming = true
    bind(p, { reject = (opts.keys or KEYS).reject })
  end
  show(p, lines_of(text), opts.filetype or '', STREAM_HELP, true)
  return p.win
end

--- Say in edit `id`'s streaming preview why the edit ended without a result; false if none is on screen.
---@param id any
---@param message string
---@return boolean shown
function M.fail(id, message)
  local p = of(id)
  if not (p and p.streaming) then
    return false
  end
  p.on_close, p.streaming = function() end, false
  show(p, lines_of('The edit failed; nothing was changed.\n\n' .. message), '', FAIL_HELP, false)
  bind(p, { reject = KEYS.reject })
  return true
end

--- Close edit `id`'s preview without calling back (the edit was cancelled elsewhere).
---@param id any
function M.dismiss(id)
  local p = of(id)
  if p then
    p.on_close = function() end
    p.close(false)
  end
end

return M
