"""The configurations in `editors/README.md` for Helix, Emacs (eglot) and Zed.

Emacs is run for real: `emacs --batch` loads the README's Emacs block as the user's init file, opens a
Python file, lets `eglot-ensure` connect to `infill serve`, and drives completion (`completion-at-point`),
the code actions, `infill.search`, and the "Add docstring" action's `workspace/applyEdit`
(`tests/eglot_check.el`). Helix and Zed cannot be installed here (no Debian, PyPI or npm package), so
their blocks are checked for shape, and `hx --health python` is run when an `hx` binary is present.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None  # type: ignore[assignment]

needs_tomllib = pytest.mark.skipif(tomllib is None, reason="tomllib needs Python >= 3.11")

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "editors" / "README.md"
ZED = ROOT / "editors" / "zed"
ELISP_DRIVER = Path(__file__).resolve().parent / "eglot_check.el"
EMACS_TIMEOUT = 240  # seconds for the whole batch run; a warm model needs ~15 s


def _blocks(lang: str) -> list[str]:
    """The fenced code blocks of one language in editors/README.md, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)


def _venv_infill() -> Path:
    return Path(sys.executable).parent / "infill"


def _emacs_has(emacs: str, feature: str) -> bool:
    probe = subprocess.run([emacs, "--batch", "--eval", "(progn (require 'package) (package-initialize)"
                            f" (princ (if (require '{feature} nil t) \"yes\" \"no\")))"],
                           capture_output=True, text=True, timeout=60)
    return probe.stdout.strip().endswith("yes")


# ------------------------------------------------------------------------------------------------ Emacs


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("snippets", [False, True], ids=["plain", "yasnippet"])
def test_emacs_eglot_readme_config(tmp_path: Path, snippets: bool) -> None:
    """Without yasnippet eglot inserts completion text as is; with it, it expands snippets."""
    emacs = shutil.which("emacs")
    if emacs is None:
        pytest.skip("emacs is not installed (apt-get install emacs-nox elpa-eglot)")
    if not _emacs_has(emacs, "eglot"):
        pytest.skip("eglot is not available to Emacs (apt-get install elpa-eglot, or Emacs >= 29)")
    if snippets and not _emacs_has(emacs, "yasnippet"):
        pytest.skip("yasnippet is not available to Emacs (apt-get install elpa-yasnippet)")
    if not _venv_infill().exists():
        pytest.skip(f"no `infill` executable next to {sys.executable} (pip install -e .)")
    init = tmp_path / "init.el"
    init.write_text(_blocks("elisp")[0] + ("(yas-global-mode 1)\n" if snippets else ""), encoding="utf-8")
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)  # eglot's project root, as a user's repo
    sample = project / "sample.py"
    sample.write_text(textwrap.dedent('''\
        def area(width, height):
            return width * height


        def greet(name: str) -> str:
            """Greet someone by name."""
            return f"Hello, {name
        '''), encoding="utf-8")
    env = dict(os.environ, PATH=f"{_venv_infill().parent}{os.pathsep}{os.environ.get('PATH', '')}",
               INFILL_INIT=str(init), INFILL_FILE=str(sample), INFILL_EDIT="" if snippets else "1",
               INFILL_TIMEOUT=str(EMACS_TIMEOUT - 60))
    run = subprocess.run([emacs, "--batch", "-l", str(ELISP_DRIVER)], capture_output=True, text=True,
                         env=env, timeout=EMACS_TIMEOUT, cwd=project)
    results = {m[1]: json.loads(m[2]) for m in re.finditer(r"^INFILL (\S+) (.*)$", run.stdout, re.M)}
    log = f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr[-3000:]}"
    assert run.returncode == 0 and "error" not in results, log

    assert results["connected"] == {"server": "infill", "managed": True}, log
    assert results["items"] and all(isinstance(label, str) and label for label in results["items"]), log
    # completion-at-point replaced the typed word with the item: the line grew, and kept what was typed,
    # with no snippet escapes (eglot without yasnippet inserts text as is).
    completed = results["completed"]
    assert completed["after"].startswith(completed["before"]), log
    inserted = completed["after"][len(completed["before"]):].rstrip("\n")
    assert inserted.strip() and "\\" not in inserted, log
    assert {"Add docstring", "Fix the bug"} <= set(results["actions"]), log
    assert isinstance(results["search"], int) and results["search"] >= 1, log
    assert results["symbols"], log
    if snippets:
        return
    # The code action's workspace/applyEdit changed the first function and nothing after it.
    edited = results["edited"]["text"]
    assert edited.startswith("def area(width, height):\n") and '"""' in edited.split("def greet")[0], log
    assert edited.split("def greet")[1].startswith("(name: str) -> str:\n"), log


# ------------------------------------------------------------------------------------------------ Helix


@needs_tomllib
def test_helix_languages_toml_shape() -> None:
    config = tomllib.loads(_blocks("toml")[0])
    server = config["language-server"]["infill"]
    assert [server["command"], *server["args"]] == ["infill", "serve"]
    assert "infill" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    langs = {lang["name"]: lang for lang in config["language"]}
    assert "python" in langs
    for lang in langs.values():
        names = [s if isinstance(s, str) else s["name"] for s in lang["language-servers"]]
        assert "infill" in names, lang["name"]


def test_helix_health(tmp_path: Path) -> None:
    hx = shutil.which("hx") or shutil.which("helix")
    if hx is None:
        pytest.skip("Helix (hx) is not installed: no Debian 12, PyPI or npm package provides it")
    config_dir = tmp_path / "helix"
    config_dir.mkdir()
    (config_dir / "languages.toml").write_text(_blocks("toml")[0], encoding="utf-8")
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path),
               PATH=f"{_venv_infill().parent}{os.pathsep}{os.environ.get('PATH', '')}")
    run = subprocess.run([hx, "--health", "python"], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0 and re.search(r"infill.*✓|✓.*infill", run.stdout), run.stdout + run.stderr


# -------------------------------------------------------------------------------------------------- Zed


@needs_tomllib
def test_zed_extension_and_settings_shape() -> None:
    manifest = tomllib.loads((ZED / "extension.toml").read_text(encoding="utf-8"))
    server = manifest["language_servers"]["infill"]
    assert "Python" in server["languages"]
    assert set(server["language_ids"]) == set(server["languages"])
    lib = (ZED / "src" / "lib.rs").read_text(encoding="utf-8")
    assert 'which("infill")' in lib and '"serve"' in lib and 'for_worktree("infill"' in lib
    settings = json.loads(_blocks("json")[0])
    assert settings["languages"]["Python"]["language_servers"][0] == "infill"
    assert "..." in settings["languages"]["Python"]["language_servers"]  # keep the other servers
