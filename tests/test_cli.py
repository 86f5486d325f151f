"""The `infill` command as a user runs it: a real subprocess, real default model, the shipped sample file.

Bad input must give one line on stderr that says what to do, and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parent.parent / "lsp_server" / "samples" / "sample.py"


def infill(*args: str, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script (or the module, if the script is not on this venv's bin)."""
    script = Path(sys.executable).parent / "infill"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "lsp_server.cli"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("infill: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]


def sample_cursor() -> tuple[str, int, int]:
    """The sample's unfinished `key=lambda item: item.` — cursor right after the dot, before `)`."""
    text = SAMPLE.read_text(encoding="utf-8")
    lines = text.splitlines()
    line = next(i for i, ln in enumerate(lines) if ln.rstrip().endswith("item: item.)"))
    return text, line, lines[line].rindex(")")


# ------------------------------------------------------------------------------------------ bad input


def test_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(infill("complete", str(tmp_path / "nope.py"), "--line", "0", "--col", "0"),
                          "cannot read", "nope.py")


@pytest.mark.parametrize("line,col", [("500", "0"), ("-1", "0"), ("0", "-3")])
def test_position_outside_the_file_is_a_one_line_error(line: str, col: str) -> None:
    assert_one_line_error(infill("complete", str(SAMPLE), "--line", line, "--col", col), "outside the file")


def test_bad_model_path_is_a_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(infill("complete", str(SAMPLE), "--line", "0", "--col", "0",
                                 "--model", str(tmp_path / "missing-model")), "does not exist")
    (tmp_path / "README.txt").write_text("not a model")
    assert_one_line_error(infill("model", "info", "--model", str(tmp_path)), "not a model directory")


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_goes_before_or_after_the_command(tmp_path: Path, where: str) -> None:
    """`infill serve -v` is how the README and editor settings write it; `infill -v serve` works too."""
    args = ["model", "info", "--model", str(tmp_path / "missing-model")]
    result = infill(*(["-v", *args] if where == "before" else [*args, "-v"]))
    assert_one_line_error(result, "does not exist")


def test_doctor_names_the_device_and_why() -> None:
    result = infill("doctor")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("device: cpu (") or first.startswith("device: cuda (")


def test_version_and_doctor_json_for_health_checks() -> None:
    from lsp_server import __version__

    assert infill("--version").stdout.strip() == f"infill {__version__}"
    result = infill("doctor", "--json")
    report = json.loads(result.stdout)
    assert report["version"] == __version__ and report["device"] in {"cpu", "cuda"}
    assert result.returncode == (0 if report["default_model"] else 1)
    assert isinstance(report.get("converted", False), bool)


def test_doctor_says_what_the_cache_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk a user can reclaim, per part: a 3 MB export and a 1 MB index show; an empty cache says so."""
    cache = tmp_path / "cache"
    (cache / "models" / "m" / "onnx").mkdir(parents=True)
    (cache / "models" / "m" / "onnx" / "model.onnx.data").write_bytes(b"\0" * 3_000_000)
    (cache / "index").mkdir()
    (cache / "index" / "ws-0123456789abcdef.sqlite3").write_bytes(b"\0" * 1_000_000)
    monkeypatch.setenv("INFILL_CACHE_DIR", str(cache))
    monkeypatch.delenv("INFILL_INDEX_DIR", raising=False)
    report = json.loads(infill("doctor", "--json").stdout)
    assert report["cache"] == str(cache) and report["cache_mb"] == {"models": 3, "search indexes": 1}
    assert f"cache: {cache} (models 3 MB, search indexes 1 MB)" in infill("doctor").stdout
    monkeypatch.setenv("INFILL_CACHE_DIR", str(tmp_path / "nothing"))
    assert f"cache: {tmp_path / 'nothing'} (empty)" in infill("doctor").stdout


# ---------------------------------------------------------------------------------- default model (slow)


def complete_json(file: Path, line: int, col: int, *extra: str) -> dict:
    result = infill("complete", str(file), "--line", str(line), "--col", str(col), "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_complete_prints_the_text_to_insert_at_the_position(default_engine, tmp_path: Path) -> None:
    text, line, col = sample_cursor()
    plain = infill("complete", str(SAMPLE), "--line", str(line), "--col", str(col), "--max-tokens", "12")
    assert plain.returncode == 0, plain.stderr
    result = complete_json(SAMPLE, line, col, "--max-tokens", "12")
    assert plain.stdout == result["text"] + "\n"  # the same greedy completion either way
    assert result["text"].strip(), "the model produced nothing at an obvious completion point"
    assert ")" not in result["text"]  # the closing bracket after the cursor is not repeated
    raw = result["raw"]  # --json adds the engine's numbers
    assert raw["ttft_ms"] > 0 and raw["total_ms"] >= raw["ttft_ms"]
    assert raw["finish_reason"] in {"stop", "rule", "eos", "length"} and 0 < raw["generated_tokens"] <= 12
    # The position decides the prompt: three lines into the file there is almost nothing before the cursor.
    early = complete_json(SAMPLE, 3, 0, "--max-tokens", "4")
    assert early["raw"] is None or early["raw"]["prompt_tokens"] < raw["prompt_tokens"]


@pytest.mark.slow
def test_model_info_describes_the_default_model(default_engine) -> None:
    human = infill("model", "info")
    assert human.returncode == 0, human.stderr
    assert default_engine.info.name in human.stdout and "precision" in human.stdout and "reason" in human.stdout
    info = json.loads(infill("model", "info", "--json").stdout)
    assert info["name"] == "qwen2.5-coder-0.5b" and info["family"] == "qwen2.5-coder" and info["fim"] is True
    assert info["precision"] == default_engine.info.precision and info["device"] in {"cpu", "cuda"}
    assert Path(info["path"]).is_dir() and info["size_mb"] > 50 and "best installed" in info["reason"]


def test_model_list_shows_the_catalogue_and_what_is_installed() -> None:
    from inference.catalog import CATALOG

    listing = json.loads(infill("model", "list", "--json").stdout)
    assert [row["name"] for row in listing] == [m.name for m in CATALOG]
    for row, model in zip(listing, CATALOG):
        assert row["installed"] == model.installed() and row["install"] == model.install_command()
    assert sum(row["default"] for row in listing) <= 1
    human = infill("model", "list")
    assert human.returncode == 0 and all(m.name in human.stdout for m in CATALOG)
    missing = [m for m in CATALOG if not m.installed()]
    assert all(m.install_command() in human.stdout for m in missing)


def test_unknown_catalogue_name_is_one_line(tmp_path: Path) -> None:
    result = infill("model", "info", "--model", "qwen-9000", cwd=tmp_path)
    assert_one_line_error(result, "unknown model 'qwen-9000'", "qwen2.5-coder-0.5b")


def test_complete_with_a_user_model_directory(tiny_model, tiny_cache: Path, qwen_engine, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`--model PATH` runs a local HF folder (exported into the cache first); being a FIM model, the code
    after the cursor goes into its prompt too."""
    text, line, col = sample_cursor()
    monkeypatch.setenv("INFILL_CACHE_DIR", str(tiny_cache))  # where qwen_engine's export already is
    model = ("--max-tokens", "4", "--model", str(tiny_model("qwen2.5-coder", "qwen2")))
    plain = complete_json(SAMPLE, line, col, *model)
    longer = tmp_path / "sample.py"
    longer.write_text(text + "\n\ndef count(items):\n    return len(items)\n", encoding="utf-8")
    with_more_suffix = complete_json(longer, line, col, *model)  # same prefix, more code after the cursor
    assert with_more_suffix["raw"]["prompt_tokens"] > plain["raw"]["prompt_tokens"]


def test_sample_file_is_shipped() -> None:
    assert SAMPLE.is_file()
    _text, line, col = sample_cursor()
    assert line > 0 and col > 0
