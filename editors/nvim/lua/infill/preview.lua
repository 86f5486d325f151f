--- The edit preview: the server's unified diff in a float or a split, with keys to accept or reject it.
--- Nothing touches the edited buffer here; the caller applies the edit on accept.

local M = {}

local api = vim.api

--- The preview on screen, if any (one at a time: a new edit replaces it, rejecting the old one).
---@type {buf: integer, win: integer, close: fun(accepted: boolean)}?
M.current = nil

local HELP = 'a / <CR> accept · r / q / <Esc> reject'

--- Open a window showing `diff`; call `on_done(true)` when accepted, `on_done(false)` when rejected or
--- closed any other way. Returns the window.
---@param diff string unified diff
---@param opts {title: string, layout: 'float'|'split', keys: {accept: string[], reject: string[]}?}
---@param on_done fun(accepted: boolean)
---@return integer window
function M.open(diff, opts, on_done)
  if M.current then
    M.current.close(false)
  end
  -- The keys below are normal-mode keys: leave insert or visual mode first.
  if api.nvim_get_mode().mode:match('^[vVsS\22\19]') then
    api.nvim_feedkeys(api.nvim_replace_termcodes('<Esc>', true, false, true), 'nx', false)
  end
  vim.cmd.stopinsert()
  local lines = vim.split(vim.trim(diff) ~= '' and diff or '(no change)', '\n', { plain = true, trimempty = true })
  local buf = api.nvim_create_buf(false, true)
  api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].filetype = 'diff'
  vim.bo[buf].modifiable = false
  vim.bo[buf].bufhidden = 'wipe'
  api.nvim_buf_set_name(buf, 'infill://preview/' .. buf)

  local title = (' %s — %s '):format(opts.title, HELP)
  local win
  if opts.layout == 'split' then
    vim.cmd(('botright %dsplit'):format(math.min(#lines + 1, math.floor(vim.o.lines / 2))))
    win = api.nvim_get_current_win()
    api.nvim_win_set_buf(win, buf)
    vim.wo[win].winbar = title:gsub('%%', '%%%%')
  else
    local width = #title
    for _, l in ipairs(lines) do
      width = math.max(width, vim.fn.strdisplaywidth(l))
    end
    width = math.min(width + 2, vim.o.columns - 4)
    local height = math.max(1, math.min(#lines, vim.o.lines - 6))
    win = api.nvim_open_win(buf, true, {
      relative = 'editor', style = 'minimal', border = 'rounded', title = title, title_pos = 'center',
      width = width, height = height,
      row = math.floor((vim.o.lines - height) / 2) - 1, col = math.floor((vim.o.columns - width) / 2),
    })
  end

  local done = false
  local function close(accepted)
    if done then
      return
    end
    done = true
    M.current = nil
    if api.nvim_win_is_valid(win) then
      pcall(api.nvim_win_close, win, true)
    end
    on_done(accepted)
  end
  M.current = { buf = buf, win = win, close = close }
  local keys = opts.keys or { accept = { 'a', '<CR>' }, reject = { 'r', 'q', '<Esc>' } }
  for _, lhs in ipairs(keys.accept) do
    vim.keymap.set('n', lhs, function()
      close(true)
    end, { buffer = buf, nowait = true, desc = 'infill: apply this edit' })
  end
  for _, lhs in ipairs(keys.reject) do
    vim.keymap.set('n', lhs, function()
      close(false)
    end, { buffer = buf, nowait = true, desc = 'infill: discard this edit' })
  end
  api.nvim_create_autocmd('BufWipeout', { buffer = buf, once = true, callback = function()
    vim.schedule(function()
      close(false)
    end)
  end })
  return win
end

return M
