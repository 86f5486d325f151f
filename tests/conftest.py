"""Shared fixtures. Append new fixtures below; do not rewrite others' sections."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helper modules (tiny_models, nvim_harness)
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repo root: benchmarks/ holds scripts


# ------------------------------------------------------------------------------------- engine fixtures
# Tiny random models are exported into a per-session temporary cache; the default model uses the user's
# cache, so a machine (or CI run) converts it once.


def load_tiny(model_dir: Path, cache_dir: Path, **kwargs):
    """`Engine.load(model_dir)` with INFILL_CACHE_DIR pointing at `cache_dir` while it exports (at fp32
    unless told otherwise: the parity tests compare with torch token for token)."""
    from inference import Engine

    kwargs.setdefault("precision", "fp32")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFILL_CACHE_DIR", str(cache_dir))
        return Engine.load(str(model_dir), **kwargs)


def only_config_eos(engine):
    """A random tiny model emits its special tokens by chance, so which family stop token ends an answer
    changes with the tokenizer (trained on this repository's sources): tests that need long answers from
    one stop at the configured EOS only."""
    import json

    eos = json.loads((engine.prepared.onnx_dir / "genai_config.json").read_text())["model"].get("eos_token_id", [])
    engine._eos_ids = set(eos if isinstance(eos, list) else [eos])
    return engine


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infill-cache")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: `tiny_model(family, arch)` builds (once per session) a random 2-layer model folder."""
    import torch
    from tiny_models import build_model

    torch.set_num_threads(1)
    built: dict[tuple[str, str], Path] = {}

    def make(family: str = "qwen2.5-coder", arch: str = "qwen2") -> Path:
        if (family, arch) not in built:
            out = tmp_path_factory.mktemp(f"tiny-{arch}-{family.replace('.', '')}")
            built[(family, arch)] = build_model(out, family=family, arch=arch)
        return built[(family, arch)]

    return make


@pytest.fixture(scope="session")
def qwen_engine(tiny_model, tiny_cache):
    """A tiny qwen2 with Qwen2.5-Coder FIM tokens, exported to ONNX."""
    return only_config_eos(load_tiny(tiny_model("qwen2.5-coder", "qwen2"), tiny_cache))


@pytest.fixture(scope="session")
def llama_engine(tiny_model, tiny_cache):
    """A tiny llama with CodeLlama FIM tokens, exported to ONNX."""
    return only_config_eos(load_tiny(tiny_model("codellama", "llama"), tiny_cache))


@pytest.fixture(scope="session")
def copy_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path, str], Path]:
    """Factory: a copy of a model folder under a new name (its own cache entry)."""
    def copy(src: Path, name: str) -> Path:
        dst = tmp_path_factory.mktemp("copies") / name
        shutil.copytree(src, dst)
        return dst

    return copy


@pytest.fixture(scope="session")
def default_engine():
    """The default catalogue model at its shipped precision (converted once into the user cache)."""
    from inference import Engine

    return Engine.load()


# ------------------------------------------------------------------------------- llama.cpp server (remote)
@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory):
    """A real llama.cpp server (xllamacpp) on 127.0.0.1 serving the default model's GGUF, for the session."""
    pytest.importorskip("xllamacpp")
    from llama_server import LlamaServer, default_gguf

    server = LlamaServer(default_gguf(), log_path=tmp_path_factory.mktemp("llama") / "server.log")
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def keyed_llama_server(tmp_path_factory: pytest.TempPathFactory):
    """A second llama.cpp server that wants the API key `sesame-123`."""
    pytest.importorskip("xllamacpp")
    from llama_server import LlamaServer, default_gguf

    server = LlamaServer(default_gguf(), api_key="sesame-123", log_path=tmp_path_factory.mktemp("llama") / "log")
    server.start()
    yield server
    server.kill()


# ------------------------------------------------------------------------------------ release artifacts
# Built once per session and shared: test_release checks the artifacts themselves, and the editor
# end-to-end tests (test_vscode) run the server from the installed wheel, as a user of a release would.


@dataclasses.dataclass(frozen=True)
class ReleaseVenv:
    """A fresh virtualenv with only the built wheel installed into it."""

    root: Path
    site: Path  # its site-packages, where the wheel's files are
    infill: Path  # the wheel's console script
    env: dict[str, str]  # the environment to run it in (nothing that could point Python at this checkout)


@pytest.fixture(scope="session")
def release_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel built from it, as a release is built (no build isolation: the build
    backend is this environment's setuptools, so nothing is downloaded)."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def release_venv(release_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> ReleaseVenv:
    """`pip install` of the wheel alone into a new venv (--no-deps: its dependencies, the model packages
    among them, come from this environment through a .pth file, so nothing is downloaded and it takes
    seconds). Checked here, so every user of the fixture gets the wheel's code and not this checkout's."""
    from lsp_server import __version__

    venv = tmp_path_factory.mktemp("release") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    wheel = release_dist / f"infill_lsp-{__version__}-py3-none-any.whl"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--quiet", str(wheel)], check=True, timeout=300)
    # A path line is appended to sys.path without processing the .pth files there, so this environment's
    # editable install of infill (a .pth/finder in its site-packages) stays inactive in the new venv.
    (site / "zz_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    where = subprocess.run([str(python), "-c", "import lsp_server, inference.engine; print(lsp_server.__file__)"],
                           capture_output=True, text=True, cwd=venv, env=env, timeout=120)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(site), f"not the wheel's copy: {where.stdout}"
    return ReleaseVenv(root=venv, site=site, infill=venv / "bin" / "infill", env=env)


# ----------------------------------------------------------------------------------- search workspaces
def write(root: Path, rel: str, data: str | bytes) -> Path:
    """`root/rel` with its folders: bytes as they are, text dedented (tests write indented literals)."""
    import textwrap

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else textwrap.dedent(data).encode())
    return path


@dataclasses.dataclass
class WalledWorkspace:
    """A workspace next to a folder it must never reach, holding every way out of it or into what it hides."""

    root: Path
    visible: list[str]  # the files search may index, relative to root, sorted
    hidden: dict[str, str]  # each path (relative to root, as an editor or a file event names it) → its unique word
    by_content: list[str]  # hidden only by what they hold (too big, binary): the walker yields them, reading refuses


@pytest.fixture
def walled_workspace(tmp_path: Path) -> WalledWorkspace:
    """Search must index `visible` and nothing else: each hidden file defines a word no search may find —
    behind a symlinked file, a symlinked folder, a symlink loop, a `..` path, `.git/`, a skipped folder,
    `.gitignore` (top-level and nested) and `.ignore` entries, a generated name, a file over the size limit,
    binary content."""
    outside = tmp_path / "outside"
    write(outside, "secret.py", "def leaked_by_symlink():\n    pass\n")
    write(outside, "dir/inner.py", "def leaked_by_folder_link():\n    pass\n")
    write(outside, "dotdot.py", "def leaked_by_dotdot():\n    pass\n")
    ws = tmp_path / "ws"
    visible = {"main.py": "def visible_function():\n    pass\n", "src/main.py": "def main(): pass\n",
               "README.md": "# readme\n"}
    for rel, text in visible.items():
        write(ws, rel, text)
    write(ws, ".gitignore", "build/\n*.log\nsecret.py\nprivate/\n")
    write(ws, "src/.gitignore", "local_*.py\n")
    write(ws, ".ignore", "notes.py\n")
    hidden = {".git/hooks/tool.py": "leaked_from_git", "private/keys.py": "leaked_from_gitignore",
              "src/secret.py": "leaked_from_gitignore_name", "src/local_dev.py": "leaked_from_nested_gitignore",
              "notes.py": "leaked_from_ignore", "build/out.py": "leaked_from_build",
              "node_modules/lib/index.py": "leaked_from_node_modules", "bundle.min.js": "leaked_minified"}
    for rel, word in hidden.items():
        write(ws, rel, f"def {word}():\n    pass\n")
    write(ws, "app.log", "leaked_log\n")
    write(ws, "image.png", b"\x89PNG\0\0leaked_png")
    write(ws, "big.py", "def leaked_big_file():\n    pass\n" + "x = 1\n" * 300_000)  # 1.8 MB
    write(ws, "blob.py", b"def leaked_binary():\n    pass\n\x00\x01\x02")
    os.symlink(outside / "secret.py", ws / "link.py")
    os.symlink(outside / "dir", ws / "linked_dir")
    os.symlink(tmp_path, ws / "loop")
    hidden.update({"app.log": "leaked_log", "image.png": "leaked_png", "big.py": "leaked_big_file",
                   "blob.py": "leaked_binary", "link.py": "leaked_by_symlink", "linked_dir/inner.py":
                   "leaked_by_folder_link", "loop/outside/secret.py": "leaked_by_symlink",
                   "../outside/dotdot.py": "leaked_by_dotdot"})
    return WalledWorkspace(ws, sorted(visible), hidden, ["big.py", "blob.py"])


# ------------------------------------------------------------------------------------ the user's cache
@pytest.fixture(scope="session", autouse=True)
def temporary_index_dir(tmp_path_factory: pytest.TempPathFactory):
    """Servers the tests start index temporary workspaces: their databases go to a temporary folder, not to
    the user's cache (where each test run left one per workspace). Tests that need another set their own."""
    previous = os.environ.get("INFILL_INDEX_DIR")
    os.environ["INFILL_INDEX_DIR"] = str(tmp_path_factory.mktemp("index"))
    yield
    if previous is None:
        os.environ.pop("INFILL_INDEX_DIR", None)
    else:
        os.environ["INFILL_INDEX_DIR"] = previous
