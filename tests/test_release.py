"""Release artifacts (issue 15, point 7): `python -m build` makes a wheel and an sdist that carry what a user
needs, the wheel installs into a fresh virtualenv and its `infill` runs from there (not from this checkout),
and every place that shows the version shows the same one."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
import zipfile
from pathlib import Path

from conftest import ReleaseVenv

from lsp_server import __version__

ROOT = Path(__file__).resolve().parent.parent


def test_one_version_everywhere() -> None:
    package = json.loads((ROOT / "vscode-extension" / "package.json").read_text(encoding="utf-8"))
    plugin = (ROOT / "editors" / "nvim" / "lua" / "infill" / "init.lua").read_text(encoding="utf-8")
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert package["version"] == __version__, "vscode-extension/package.json"
    assert re.search(r"^M\.version = '([^']+)'", plugin, re.M).group(1) == __version__, "editors/nvim (init.lua)"
    # (Changes not yet released are listed under "## Unreleased", above the newest release.)
    newest = re.search(r"^## (?!Unreleased$)(\S+)", changelog, re.M)
    assert newest.group(1) == __version__, "the newest CHANGELOG.md release"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'version = {attr = "lsp_server.__version__"}' in pyproject  # the wheel's version is this one too


def test_build_makes_a_wheel_and_an_sdist_with_what_users_need(release_dist: Path) -> None:
    dist = release_dist
    wheel = dist / f"infill_lsp-{__version__}-py3-none-any.whl"
    sdist = dist / f"infill_lsp-{__version__}.tar.gz"
    assert wheel.is_file() and sdist.is_file(), sorted(p.name for p in dist.iterdir())
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"lsp_server/cli.py", "lsp_server/samples/sample.py", "inference/engine.py"} <= names
    assert not any(n.startswith(("tests/", "benchmarks/", "editors/")) for n in names)
    entry_points = zipfile.ZipFile(wheel).read(f"infill_lsp-{__version__}.dist-info/entry_points.txt").decode()
    assert "infill = lsp_server.cli:main" in entry_points
    with tarfile.open(sdist) as tar:
        files = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"CHANGELOG.md", "README.md", "pyproject.toml", "lsp_server/samples/sample.py",
            "editors/nvim/lua/infill/init.lua", "editors/nvim/lua/infill/health.lua", "editors/nvim/doc/infill.txt",
            "editors/nvim/doc/tags", "vscode-extension/package.json", "vscode-extension/src/extension.ts"} <= files
    assert not any("node_modules" in f or f.endswith(".vsix") or "__pycache__" in f for f in files)


def test_the_wheel_installs_into_a_fresh_venv_and_runs(release_venv: ReleaseVenv, tmp_path: Path) -> None:
    """The wheel alone in a new venv (conftest's release_venv, which also the VS Code end-to-end tests use):
    `infill` runs from there, not from this checkout."""
    site = release_venv.site
    run = lambda *args: subprocess.run([str(release_venv.infill), *args], capture_output=True, text=True,  # noqa: E731
                                       cwd=tmp_path, env=release_venv.env, timeout=120)
    version = run("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"infill {__version__}"
    where = subprocess.run([str(release_venv.root / "bin" / "python"), "-c", "import lsp_server, inference.engine;"
                            " print(lsp_server.__file__)"], capture_output=True, text=True, cwd=tmp_path,
                           env=release_venv.env)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout  # the wheel's copy, not this checkout
    assert (site / "lsp_server" / "samples" / "sample.py").is_file()
    doctor = run("doctor", "--json")
    assert json.loads(doctor.stdout)["version"] == __version__, doctor.stderr
