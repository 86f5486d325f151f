--- The edit preview: the server's unified diff in a float or a split, with keys to accept or reject it.
--- While the server is still writing an edit (`infill/editStream`), the same window shows the code so far
--- and becomes the diff preview when the edit arrives. Nothing touches the edited buffer here; the caller
--- applies the edit on accept.
---
--- The preview never takes the cursor: it opens beside the user's window, whose mode and cursor stay as
--- they are while the code streams in. Its keys work from the edited buffer (`source_keys`, mapped there
--- only while the preview is open) and inside the preview window, which `<C-w>w` reaches.

local M = {}

local api = vim.api

--- The preview on screen, if any (one at a time: a new edit replaces it, rejecting the old one).
--- `id` is the edit's request id (nil for a preview opened without one); `streaming` is true while the
--- code is still being written; `follow` is the line the streaming preview's cursor was put on (false
--- once the user moved it).
---@type {buf: integer, win: integer, id: any, streaming: boolean, close: fun(accepted: boolean)}?
M.current = nil

--- The preview window's own keys, and what its title says when the edited buffer has none.
local KEYS = { accept = { 'a', '<CR>' }, reject = { 'r', 'q', '<Esc>' } }
local HELP = {
  diff = 'a / <CR> accept · r / q / <Esc> reject',
  stream = 'writing… · q / <Esc> stop',
  fail = 'q / <Esc> close',
}

local function lines_of(text)
  local lines = vim.split(text, '\n', { plain = true, trimempty = true })
  return #lines > 0 and lines or { '' }
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

--- What the title tells the user to press in `state` ('stream', 'diff' or 'fail'): the keys that work
--- from the edited buffer, where the user is, when it has them; else the preview window's own.
local function help(p, state)
  local accept, reject = p.source_keys.accept, p.source_keys.reject
  if not reject or (state == 'diff' and not accept) then
    return HELP[state]
  end
  if state == 'stream' then
    return ('writing… · %s stop'):format(reject)
  elseif state == 'fail' then
    return ('%s close'):format(reject)
  end
  return ('%s accept · %s reject'):format(accept, reject)
end

--- Show `lines` (as `filetype`) in the preview's window, titled with the keys of `state`. While the code
--- streams in the window follows its end (its cursor on the last line), until the user moves that cursor;
--- a diff or a failure shows from the top.
local function show(p, lines, filetype, state, grow_only)
  local follow = state == 'stream' and p.follow ~= false
  if follow and p.follow and api.nvim_win_get_cursor(p.win)[1] ~= p.follow then
    follow = false -- the user moved in the preview since the last chunk: leave them there
  end
  vim.bo[p.buf].modifiable = true
  api.nvim_buf_set_lines(p.buf, 0, -1, false, lines)
  vim.bo[p.buf].modifiable = false
  if vim.bo[p.buf].filetype ~= filetype then
    vim.bo[p.buf].filetype = filetype
  end
  fit(p, lines, (' %s — %s '):format(p.title, help(p, state)), grow_only)
  if state ~= 'stream' then
    p.follow = nil
    api.nvim_win_set_cursor(p.win, { 1, 0 })
  elseif follow then
    p.follow = #lines
    api.nvim_win_set_cursor(p.win, { #lines, 0 })
  else
    p.follow = false
  end
end

--- Map `lhs` of `buf` in `mode` to `fn` for preview `p`, keeping a buffer-local mapping of the user's that
--- it covers so `unbind` can put it back.
local function map(p, buf, mode, lhs, fn, desc)
  if not lhs or not api.nvim_buf_is_valid(buf) then
    return
  end
  local previous = api.nvim_buf_call(buf, function()
    return vim.fn.maparg(lhs, mode, false, true)
  end)
  vim.keymap.set(mode, lhs, fn, { buffer = buf, nowait = true, desc = desc })
  table.insert(p.mapped, { buf = buf, mode = mode, lhs = lhs, previous = previous.buffer == 1 and previous or nil })
end

--- Take back every key `p` mapped, restoring the user's mappings they covered.
local function unbind(p)
  for i = #p.mapped, 1, -1 do -- newest first: a key mapped twice ends with the user's own
    local m = p.mapped[i]
    if api.nvim_buf_is_valid(m.buf) then
      pcall(vim.keymap.del, m.mode, m.lhs, { buffer = m.buf })
      if m.previous then
        api.nvim_buf_call(m.buf, function()
          vim.fn.mapset(m.mode, false, m.previous)
        end)
      end
    end
  end
  p.mapped = {}
end

--- A key of the edited buffer acts in normal mode, and in visual mode (a code action leaves the user with
--- the selection it was asked for), which it ends first.
local function ending_visual_mode(fn)
  return function()
    if api.nvim_get_mode().mode:match('^[vV\22]') then
      api.nvim_feedkeys(api.nvim_replace_termcodes('<Esc>', true, false, true), 'nx', false)
    end
    fn()
  end
end

--- The keys of `state`: in the preview window its own, and `source_keys` both there and in the edited
--- buffer. While the code streams in there is nothing to accept yet: the accept key says so.
local function bind(p, state)
  unbind(p)
  local function accept()
    p.close(true)
  end
  local function reject()
    p.close(false)
  end
  local function not_yet()
    vim.notify('infill: the edit is still being written', vim.log.levels.INFO)
  end
  local on_accept = state == 'diff' and accept or (state == 'stream' and not_yet or nil)
  local stop = state == 'stream' and 'infill: stop this edit' or 'infill: discard this edit'
  if state == 'diff' then
    for _, lhs in ipairs(KEYS.accept) do
      map(p, p.buf, 'n', lhs, accept, 'infill: apply this edit')
    end
  end
  for _, lhs in ipairs(KEYS.reject) do
    map(p, p.buf, 'n', lhs, reject, stop)
  end
  for _, buf in ipairs(p.source and { p.buf, p.source } or { p.buf }) do
    for _, mode in ipairs({ 'n', 'x' }) do
      if on_accept then
        map(p, buf, mode, p.source_keys.accept, ending_visual_mode(on_accept), 'infill: apply the previewed edit')
      end
      map(p, buf, mode, p.source_keys.reject, ending_visual_mode(reject), stop)
    end
  end
end

--- A new preview window beside the current one (replacing the preview on screen), without entering it;
--- `on_close(accepted)` is called once when it closes.
---@param opts {title: string, layout: 'float'|'split', id: any?, source: integer?, source_keys: table?}
local function create(opts, on_close)
  if M.current then
    M.current.close(false)
  end
  local buf = api.nvim_create_buf(false, true)
  vim.bo[buf].bufhidden = 'wipe'
  api.nvim_buf_set_name(buf, 'infill://preview/' .. buf)
  local config = opts.layout == 'split' and { split = 'below', win = -1, height = 2 }
    or { relative = 'editor', style = 'minimal', border = 'rounded', width = 1, height = 1, row = 0, col = 0 }
  local win = api.nvim_open_win(buf, false, config)
  local source = opts.source == 0 and api.nvim_get_current_buf() or opts.source
  local p = { buf = buf, win = win, id = opts.id, layout = opts.layout, title = opts.title, streaming = false,
    on_close = on_close, mapped = {}, source = source, source_keys = opts.source_keys or {} }
  function p.close(accepted)
    if p.done then
      return
    end
    p.done = true
    if M.current == p then
      M.current = nil
    end
    unbind(p)
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
--- `on_done(true)` when accepted, `on_done(false)` when rejected or closed any other way. The cursor
--- stays where it is; `opts.source_keys` accept and reject from buffer `opts.source` too. Returns the window.
---@param diff string unified diff
---@param opts {title: string, layout: 'float'|'split', id: any?, source: integer?, source_keys: {accept: string|false?, reject: string|false?}?}
---@param on_done fun(accepted: boolean)
---@return integer window
function M.open(diff, opts, on_done)
  local p = of(opts.id)
  if p then
    p.on_close, p.streaming, p.width, p.height = on_done, false, nil, nil
  else
    p = create(opts, on_done)
  end
  show(p, lines_of(vim.trim(diff) ~= '' and diff or '(no change)'), 'diff', 'diff', false)
  bind(p, 'diff')
  return p.win
end

--- Show the code of edit `opts.id` written so far, opening the preview on the first call (without moving
--- the cursor) and updating it on the next ones; `on_stop()` is called if the user closes it before the
--- edit arrives. Returns the window.
---@param text string the replacement so far
---@param opts {title: string, layout: 'float'|'split', filetype: string?, id: any, source: integer?, source_keys: table?}
---@param on_stop fun()
---@return integer window
function M.stream(text, opts, on_stop)
  local p = of(opts.id)
  if not (p and p.streaming) then
    p = create(opts, function()
      on_stop()
    end)
    p.streaming = true
    bind(p, 'stream')
  end
  show(p, lines_of(text), opts.filetype or '', 'stream', true)
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
  show(p, lines_of('The edit failed; nothing was changed.\n\n' .. message), '', 'fail', false)
  bind(p, 'fail')
  return true
end

--- Reject the preview on screen if it is of buffer `bufnr` (the edited buffer, or the preview's own), as
--- its reject key does: a streaming one stops its edit, a diff is discarded.
---@param bufnr integer
---@return boolean closed false when no preview of `bufnr` is open
function M.reject(bufnr)
  local p = M.current
  if not p or p.done or (p.source ~= bufnr and p.buf ~= bufnr) then
    return false
  end
  p.close(false)
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
