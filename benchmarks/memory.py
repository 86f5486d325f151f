"""Where the memory goes (issue 11: peak RSS of the server <= 700 MB): the engine's process stage by stage,
each component alone, and the real server with its worker.

    python benchmarks/memory.py [--parts engine,components,server] [--model DIR] [--new-tokens 64]
                                [--requests 3] [--context-tokens 1800] [--mode worker|inprocess]
                                [--session-options JSON] [--tracemalloc]

- engine: a fresh process loads `Engine.load()` (the default model, as the worker does) and serves the
  worker's workload: cold FIM prompts of ~1,900 tokens on different stdlib modules (each takes a KV slot
  of 2,048 tokens; the fourth evicts one), typing on the last (warm, the tail only), a warm-up prefill, then
  warm-ups of three more modules (each slot then ends on a warm-up).
  After each stage: RSS, its anonymous and file-backed parts, the malloc heap, and the peak (VmHWM).
  At the end: resident memory by mapping (smaps), Python-side objects (--tracemalloc), and a digest of
  the generated text, so two builds can be shown to answer the same.
- components: each part the processes load, alone in a fresh process after the imports, as retained
  RSS (after `malloc_trim`, i.e. what stays) and transient peak (what loading it costs at its worst).
- server: `infill serve` with its model worker (or `--mode inprocess`; benchmarks/loop_latency.py's client
  and settings, 1,800 context tokens unless --context-tokens), the same kind of requests over LSP; RSS and
  peak of each process (VmHWM, so no sampling gap), its PSS (a shared page split between the processes that
  map it: added RSS counts the libraries both map twice), and both sums sampled every 0.1 s.

RSS is valid on a busy machine; the engine stages' wall times (ms: the first request after loading pays for
weight pages read back from the file) only on a quiet one. Prints tables, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.memory import trim_heap  # noqa: E402

MB = 2**20
CODE_MODULES = ("argparse", "difflib", "tarfile", "inspect", "calendar")  # a cold prompt each
WARM_MODULES = ("shutil", "textwrap", "pathlib")  # warmed only, never asked (files opened and read)
TYPED = ["\n", "    ", "re", "sult", " ="]  # keystrokes on the last document: warm requests


# --------------------------------------------------------------------------------------- measuring
def status(pid: int | str = "self") -> dict[str, float]:
    """RSS now, its anonymous / file-backed parts and the peak, in MB, from /proc/PID/status."""
    wanted = {"VmRSS": "rss", "VmHWM": "peak", "RssAnon": "anon", "RssFile": "file"}
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[wanted[key]] = round(int(value.split()[0]) / 1024, 1)
    return out


def shared(pid: int | str = "self") -> dict[str, float]:
    """PSS (each shared page split between the processes mapping it) and USS (pages no other process maps), in
    MB, from /proc/PID/smaps_rollup. Two processes' RSS added together count the libraries and the weight file
    they both map twice; their PSS added together is what the machine gives them."""
    kb: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        kb[key] = int(value.split()[0])
    return {"pss": round(kb["Pss"] / 1024, 1), "uss": round((kb["Private_Clean"] + kb["Private_Dirty"]) / 1024, 1)}


def mappings(pid: int | str = "self") -> dict[str, float]:
    """Resident MB per mapping name ([heap], [anon] for anonymous mmaps, or the file's path)."""
    sizes: dict[str, float] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            name = parts[5] if len(parts) > 5 else "[anon]"
        elif parts and parts[0] == "Rss:":
            sizes[name] = sizes.get(name, 0.0) + int(parts[1]) / 1024
    return {k: round(v, 1) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])}


def grouped(pid: int | str = "self") -> dict[str, float]:
    """Resident MB by kind: the malloc heap, anonymous mmaps (big allocations: weights, arenas), the model's
    weight files, shared libraries, everything else."""
    groups = {"heap": 0.0, "anon_mmap": 0.0, "model_files": 0.0, "libraries": 0.0, "other": 0.0}
    for name, mb in mappings(pid).items():
        if name == "[heap]":
            key = "heap"
        elif name == "[anon]":
            key = "anon_mmap"
        elif name.endswith((".onnx", ".onnx.data", ".json")):
            key = "model_files"
        elif ".so" in name:
            key = "libraries"
        else:
            key = "other"
        groups[key] += mb
    return {k: round(v, 1) for k, v in groups.items()}


def reset_peak() -> None:
    """Start VmHWM afresh from the current RSS (Linux: clear_refs 5), to see one step's own peak."""
    Path("/proc/self/clear_refs").write_text("5")


def snapshot(stage: str, since: float | None = None) -> dict:
    """Memory now; with `since` (a perf_counter), also the stage's wall time (meaningful on a quiet machine)."""
    took = {} if since is None else {"ms": round((time.perf_counter() - since) * 1000)}
    return {"stage": stage, **status(), **grouped(), **took}


# ----------------------------------------------------------------------------------- engine child
def long_fim(module: str):
    """~2,000 tokens of a stdlib module and a new function to write (as benchmarks/loop_latency.py builds
    them; not imported from there: it loads the LSP client, which the worker never does)."""
    import sysconfig

    from inference.registry import FimParts

    source = (Path(sysconfig.get_paths()["stdlib"]) / f"{module}.py").read_text(encoding="utf-8")
    head = source[: source.index("\n", min(len(source) - 1, 9000)) + 1]
    return FimParts(head + f"\n\ndef summarize_{module}_options(values, limit=10):\n    ", "", path=f"{module}.py")


def engine_child(args: argparse.Namespace) -> dict:
    """The worker's memory, stage by stage (runs in a fresh process)."""
    if args.tracemalloc:
        tracemalloc.start()
    from inference import Engine
    from inference.registry import FimParts

    stages = [snapshot("imports")]
    options = {"session_options": json.loads(args.session_options)} if args.session_options else {}
    start = time.perf_counter()
    engine = Engine.load(args.model, **options)
    stages.append(snapshot("Engine.load", start))
    prompts = [long_fim(module) for module in CODE_MODULES[:4]]
    texts: list[str] = []
    tokens: list[int] = []
    for i, prompt in enumerate(prompts):
        start = time.perf_counter()
        result = engine.complete(prompt, max_new_tokens=args.new_tokens)
        texts.append(result.text)
        tokens.append(result.prompt_tokens)
        stages.append(snapshot(f"cold {i + 1} ({result.prompt_tokens} tok, slots {engine.slot_capacities()})", start))
    last = prompts[-1]
    prefix = last.prefix
    start = time.perf_counter()
    for piece in TYPED:
        prefix += piece
        texts.append(engine.complete(FimParts(prefix, last.suffix, path=last.path),
                                     max_new_tokens=args.new_tokens).text)
    stages.append(snapshot(f"typing ({len(TYPED)} warm)", start))
    start = time.perf_counter()
    computed = engine.prefill(long_fim(CODE_MODULES[4]), max_new_tokens=args.new_tokens)
    stages.append(snapshot(f"warm-up prefill ({computed} tok)", start))
    start = time.perf_counter()  # the user reads three more files: every slot ends on a warm-up, none asked
    computed = sum(engine.prefill(long_fim(module), max_new_tokens=args.new_tokens) for module in WARM_MODULES)
    stages.append(snapshot(f"{len(WARM_MODULES)} more warm-ups ({computed} tok)", start))
    report: dict[str, object] = {"stages": stages, "mappings": dict(list(mappings().items())[:12]),
                                 "prompt_tokens": tokens,
                                 "digest": hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]}
    if args.tracemalloc:
        python_now, python_peak = tracemalloc.get_traced_memory()
        top = tracemalloc.take_snapshot().statistics("filename")[:5]
        report.update(python_mb=round(python_now / MB, 1), python_peak_mb=round(python_peak / MB, 1),
                      python_top=[(str(s.traceback[0].filename).replace(str(ROOT) + "/", ""), round(s.size / MB, 1))
                                  for s in top])
    return report


# ------------------------------------------------------------------------------- component children
def _model_dir(model: str | None) -> Path:
    from inference.sources import prepare

    return prepare(model, device="cpu").onnx_dir


def _og_model(model_dir: Path, session_options: str | None):
    import onnxruntime_genai as og

    config = og.Config(str(model_dir))
    config.clear_providers()
    if session_options:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": json.loads(session_options)}}}))
    return og.Model(config)


def _engine_session(model_dir: Path) -> object:
    """The session with the engine's options, its weight-file pages paged out as the engine does."""
    from inference import engine, memory

    model = _og_model(model_dir, json.dumps(engine.memory_options(model_dir)))
    memory.page_out(model_dir)
    return model


Loader = Callable[[Path, object], object]  # (model folder, what the setup loaded) -> the component


def _components(session_options: str | None) -> dict[str, tuple[Loader | None, Loader]]:
    """What the two processes load, by name: (setup loaded before the baseline, or None; the component)."""
    import importlib

    import onnxruntime_genai as og

    from inference import tokenizer

    parts: dict[str, tuple[Loader | None, Loader]] = {
        "onnx session (og.Model)": (None, lambda d, _: _og_model(d, session_options)),
        "onnx session as the engine opens it": (None, lambda d, _: _engine_session(d)),
        "og.Tokenizer (over the session)": (lambda d, _: _og_model(d, session_options),
                                            lambda d, model: og.Tokenizer(model)),
        "tokenizers.Tokenizer": (None, lambda d, _: tokenizer.load_tokenizer(d)),
    }
    decoder = getattr(tokenizer, "ByteDecoder", None)  # the worker's decoder, once there is one
    if decoder is not None:
        parts["byte-level decode table"] = (None, lambda d, _: decoder.from_file(d))
    parts["search embedder (all-MiniLM-L6-v2)"] = (
        None, lambda d, _: importlib.import_module("inference.embed").Embedder.load())
    parts["search embedder, after embedding 256 chunks"] = (None, lambda d, _: _embed_chunks(256))
    parts["server modules (lsp_server.server)"] = (None, lambda d, _: importlib.import_module("lsp_server.server"))
    return parts


def _embed_chunks(count: int) -> object:
    """The search embedder after indexing `count` chunks of real code (8 lines each, in batches of 32)."""
    import sysconfig

    from inference.embed import Embedder

    lines = (Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text(encoding="utf-8").splitlines()
    embedder = Embedder.load()
    embedder.embed(["\n".join(lines[i * 8:i * 8 + 8]) for i in range(count)])
    return embedder


def component_child(args: argparse.Namespace) -> dict:
    """One component's retained and transient RSS, loaded alone after the imports (and its setup)."""
    import numpy  # noqa: F401
    import onnxruntime_genai  # noqa: F401
    import tokenizers  # noqa: F401

    model_dir = _model_dir(args.model)
    setup, load = _components(args.session_options)[args.child.split(":", 1)[1]]
    context = setup(model_dir, None) if setup else None
    trim_heap()
    reset_peak()
    before = status()
    held = load(model_dir, context)
    after_load = status()
    trim_heap()
    after = status()
    assert held is not None or context is not None
    return {"retained_mb": round(after["rss"] - before["rss"], 1),
            "untrimmed_mb": round(after_load["rss"] - before["rss"], 1),
            "transient_peak_mb": round(max(after["peak"] - before["rss"], 0.0), 1),
            "anon_mb": round(after["anon"] - before["anon"], 1), "file_mb": round(after["file"] - before["file"], 1)}


# ----------------------------------------------------------------------------------------- server
async def server_part(args: argparse.Namespace) -> dict:
    """The real server and its worker: RSS of each after the same kind of requests."""
    import shutil
    import tempfile

    import psutil

    from benchmarks import loop_latency
    from benchmarks.loop_latency import STDLIB, WORKSPACE_FILES, Server, long_document

    loop_latency.SETTINGS = {**loop_latency.SETTINGS, "contextTokens": args.context_tokens,  # read by Server.start
                             **({"model": args.model} if args.model else {})}
    workspace = Path(tempfile.mkdtemp(prefix="infill-mem-ws-"))
    for name in WORKSPACE_FILES:
        shutil.copy(STDLIB / f"{name}.py", workspace / f"{name}.py")
    server = Server(args.mode, workspace)
    peak_sum = peak_pss = 0.0
    sampling = True

    async def sample() -> None:
        nonlocal peak_sum, peak_pss
        while sampling:
            try:
                procs = [psutil.Process(server.pid)]
                procs += procs[0].children(recursive=True)
                peak_sum = max(peak_sum, sum(p.memory_info().rss for p in procs) / MB)
                peak_pss = max(peak_pss, sum(shared(p.pid)["pss"] for p in procs))
            except (psutil.Error, AttributeError, OSError):
                pass
            await asyncio.sleep(0.1)

    sampler = asyncio.ensure_future(sample())
    stages = []
    try:
        await server.start()
        children = psutil.Process(server.pid).children()
        worker = children[0].pid if args.mode == "worker" and children else None
        nothing = {"rss": 0.0, "peak": 0.0, "anon": 0.0, "file": 0.0, "pss": 0.0, "uss": 0.0}

        def both(stage: str) -> dict:
            return {"stage": stage, "server": {**status(server.pid), **shared(server.pid)},
                    "worker": {**status(worker), **shared(worker)} if worker else nothing}

        stages.append(both("ready, workspace indexed"))
        for n, module in enumerate(CODE_MODULES[:args.requests]):
            uri = (workspace / f"long{n}.py").as_uri()
            text, offset = long_document(module)  # the same text as long_fim(module)
            server.open(uri, text)
            await server.inline(uri, text, offset)
            stages.append(both(f"cold request {n + 1}"))
        for piece in TYPED:
            text, offset = text[:offset] + piece + text[offset:], offset + len(piece)
            await server.inline(uri, text, offset)
        stages.append(both(f"typing ({len(TYPED)} warm)"))
        await asyncio.sleep(1.0)
        stages.append(both("settled"))
        detail = {"server": grouped(server.pid), **({"worker": grouped(worker)} if worker else {})}
    finally:
        sampling = False
        await sampler
        await server.stop()
        shutil.rmtree(workspace, ignore_errors=True)
    return {"stages": stages, "detail": detail, "sampled_peak_sum_mb": round(peak_sum, 1),
            "sampled_peak_pss_mb": round(peak_pss, 1)}


# ------------------------------------------------------------------------------------------ driver
def run_child(child: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", child, "--new-tokens", str(args.new_tokens)]
    if args.model:
        cmd += ["--model", args.model]
    if args.session_options:
        cmd += ["--session-options", args.session_options]
    if args.tracemalloc:
        cmd.append("--tracemalloc")
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{child} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_engine(r: dict) -> None:
    print(f"{'engine process, stage':<52}{'RSS':>8}{'peak':>8}{'anon':>8}{'file':>8}{'heap':>8}{'mmap':>8}"
          f"{'model':>8}{'ms':>9}")
    for s in r["stages"]:
        print(f"{s['stage']:<52}{s['rss']:>8.0f}{s['peak']:>8.0f}{s['anon']:>8.0f}{s['file']:>8.0f}"
              f"{s['heap']:>8.0f}{s['anon_mmap']:>8.0f}{s['model_files']:>8.0f}{s.get('ms', ''):>9}")
    print("resident by mapping (MB):")
    for name, mb in r["mappings"].items():
        print(f"  {mb:8.1f}  {name}")
    if "python_mb" in r:
        print(f"Python objects (tracemalloc): {r['python_mb']} MB now, {r['python_peak_mb']} MB peak; "
              f"top: {r['python_top']}")
    print(f"prompt tokens {r['prompt_tokens']}, output digest {r['digest']}")


def print_components(rows: dict[str, dict]) -> None:
    print(f"{'component (alone, fresh process)':<40}{'retained':>10}{'untrimmed':>11}{'load peak':>11}"
          f"{'anon':>8}{'file':>8}")
    for name, r in rows.items():
        print(f"{name:<40}{r['retained_mb']:>10.0f}{r['untrimmed_mb']:>11.0f}{r['transient_peak_mb']:>11.0f}"
              f"{r['anon_mb']:>8.0f}{r['file_mb']:>8.0f}")


def print_server(r: dict) -> None:
    print(f"{'server with worker, stage':<32}{'server RSS':>12}{'peak':>8}{'PSS':>6}{'worker RSS':>12}{'peak':>8}"
          f"{'PSS':>6}{'RSS sum':>9}{'PSS sum':>9}")
    for s in r["stages"]:
        a, b = s["server"], s["worker"]
        print(f"{s['stage']:<32}{a['rss']:>12.0f}{a['peak']:>8.0f}{a['pss']:>6.0f}{b['rss']:>12.0f}{b['peak']:>8.0f}"
              f"{b['pss']:>6.0f}{a['rss'] + b['rss']:>9.0f}{a['pss'] + b['pss']:>9.0f}")
    print(f"sum of both sampled every 0.1 s, peak: RSS {r['sampled_peak_sum_mb']:.0f} MB, PSS "
          f"{r['sampled_peak_pss_mb']:.0f} MB; by kind: {r['detail']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="engine,components,server")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=3, help="cold requests to the server (at most 5)")
    parser.add_argument("--mode", choices=("worker", "inprocess"), default="worker",
                        help="the server's model in its worker process (the default) or in the server itself")
    parser.add_argument("--context-tokens", type=int, default=1800,
                        help="the server's prompt budget (1,800 as in loop_latency.py; the default setting is 768)")
    parser.add_argument("--session-options", help="JSON object overlaid on genai_config's session_options")
    parser.add_argument("--model", help="a model setting (default: the catalogue's); a copy of the ONNX folder "
                        "measures page-out where another process maps the cached one (the kernel keeps shared pages)")
    parser.add_argument("--tracemalloc", action="store_true", help="also count Python objects (costs RSS itself)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = engine_child(args) if args.child == "engine" else component_child(args)
        print(json.dumps(result))
        return 0
    report: dict = {"load_average_1m": round(os.getloadavg()[0], 2), "started": time.strftime("%Y-%m-%d %H:%M"),
                    "context_tokens": args.context_tokens, "model": args.model, "mode": args.mode}
    parts = args.parts.split(",")
    if "components" in parts:
        report["components"] = {name: run_child(f"component:{name}", args)
                                for name in _components(args.session_options)}
        print_components(report["components"])
    if "engine" in parts:
        report["engine"] = run_child("engine", args)
        print_engine(report["engine"])
    if "server" in parts:
        report["server"] = asyncio.run(server_part(args))
        print_server(report["server"])
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
