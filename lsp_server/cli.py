"""The `infill` command: serve, demo, complete, model prepare/info, doctor, index, search.

Every subcommand is a thin shell over a library call. Errors a user can fix print one line that says
what to do and exit non-zero; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from inference import InferenceError
from lsp_server import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infill", description="Local code model for every editor, over LSP.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    parser.add_argument("--version", action="version", version=f"infill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the language server (stdio by default)")
    p.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio (loopback by default)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("complete", help="print the completion at a position of a file")
    p.add_argument("file", type=Path)
    p.add_argument("--line", type=int, required=True, help="0-based line")
    p.add_argument("--col", type=int, required=True, help="0-based column (UTF-16 code units, like LSP)")
    p.add_argument("--max-tokens", type=int, default=64)
    _model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON with timings")
    p.set_defaults(func=_complete)

    model = sub.add_parser("model", help="prepare or describe the "
                                         "model").add_subparsers(dest="model_cmd", required=True)
    p = model.add_parser("prepare", help="convert the model into the cache now (otherwise done on first use)")
    _model_args(p)
    p.set_defaults(func=_model_prepare)
    p = model.add_parser("list", help="the catalogue: known models, what is installed, what each costs here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_model_list)
    p = model.add_parser("info", help="model, source, family, FIM support, device, precision, size")
    _model_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_model_info)

    p = sub.add_parser("doctor", help="which device and runtime infill would use, and why")
    p.add_argument("--backend", metavar="URL", help="check a serving engine instead (llama.cpp server, vLLM, Ollama …)")
    p.add_argument("--kind", default="openai", choices=["openai", "llama.cpp", "ollama"],
                   help="its API (with --backend)")
    p.add_argument("--backend-model", default="", help="the model id to use (default: the first the server lists)")
    p.add_argument("--api-key-env", default="", help="environment variable holding its API key (never the key)")
    p.add_argument("--timeout-ms", type=int, default=30_000)
    p.add_argument("--family", help="force the model family / FIM template (default: from the model id)")
    p.add_argument("--json", action="store_true", help="print one JSON object (for editors' health checks)")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("demo", help="start the server, connect a real LSP client, show what it does")
    _model_args(p)
    p.set_defaults(func=_demo)

    _add_search_commands(sub)

    _verbose_after_commands(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except InferenceError as exc:
        print(f"infill: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _verbose_after_commands(parser: argparse.ArgumentParser) -> None:
    """Take `-v` after a command too (`infill serve -v`, as the README and editor settings write it); given
    there or before it, it means the same."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                     help="log to stderr")
                _verbose_after_commands(command)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="a catalogue name (infill model list), a .gguf file, or a Hugging Face or ONNX "
                                   "folder (default: the best installed catalogue model)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8", "int4"],
                   help="export precision for a GGUF or Hugging Face model (default: the catalogue's, else int4)")
    p.add_argument("--family", help="force the model family / FIM template (e.g. qwen2.5-coder, starcoder)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def _add_search_commands(sub: argparse._SubParsersAction) -> None:
    """`infill index PATH` and `infill search QUERY` (the search feature's shell face)."""
    p = sub.add_parser("index", help="index a workspace for code search (incremental; reuses the database)")
    p.add_argument("path", type=Path, nargs="?", default=Path("."))
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=_index)

    p = sub.add_parser("search", help="search a workspace's code in plain words or identifiers")
    p.add_argument("query")
    p.add_argument("--workspace", type=Path, default=Path("."), help="workspace folder (default: current)")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print the results as a JSON list")
    p.add_argument("--no-update", action="store_true", help="search the index as it is, without refreshing it")
    p.set_defaults(func=_search)


def _open_index(path: Path):
    from lsp_server.search.store import Index

    if not path.is_dir():
        raise InferenceError(f"{path} is not a directory")
    try:
        from inference.embed import Embedder

        embedder = Embedder.load(progress=_progress)
    except InferenceError as exc:
        print(f"infill: keyword search only: {exc}", file=sys.stderr)
        embedder = None
    return Index(path, embedder=embedder)


def _index(args: argparse.Namespace) -> int:
    index = _open_index(args.path)
    stats = index.update_all(_progress)
    if args.json:
        print(json.dumps({**stats.as_dict(), "database": str(index.db_path)}))
    else:
        print(f"indexed {stats.files} files, {stats.chunks} chunks ({stats.files_changed} changed,"
              f" {stats.files_removed} removed, {stats.chunks_embedded} embedded) in {stats.seconds:.1f}s"
              f" -> {index.db_path}")
    return 0


def _search(args: argparse.Namespace) -> int:
    index = _open_index(args.workspace)
    if not args.no_update:
        index.update_all(_progress if not args.json else None)
    hits = index.search(args.query, max(1, args.limit))
    if args.json:
        print(json.dumps([hit.as_dict() for hit in hits], ensure_ascii=False))
        return 0
    for hit in hits:
        rel = index.rel(Path(hit.path))
        print(f"{rel}:{hit.start_line + 1}  {hit.name} ({hit.kind})  {hit.score:.4f}")
        for line in hit.snippet.split("\n")[:3]:
            print(f"    {line}")
    if not hits:
        print("no results", file=sys.stderr)
    return 0


def _progress(message: str, fraction: float | None = None) -> None:
    pct = "" if fraction is None else f" {fraction * 100:3.0f}%"
    print(f"[infill]{pct} {message}", file=sys.stderr, flush=True)


def _serve(args: argparse.Namespace) -> int:
    from inference.memory import limit_arenas
    from lsp_server.server import create_server

    limit_arenas()  # requests run on a thread pool: memory one freed is reused, not kept in an arena per thread
    server = create_server()
    code: int | str | None = 0
    try:
        if args.tcp:
            host, _, port = args.tcp.rpartition(":")
            server.start_tcp(host or "127.0.0.1", int(port))
        else:
            server.start_io()
    except SystemExit as exc:  # pygls ends the process on `exit` with sys.exit
        code = exc.code
    # Leave without finalizing the interpreter: background threads (the model loader, the indexer exporting
    # the embedding model with torch) may be inside native code whose static destructors then abort the
    # process ("terminate called without an active exception", SIGABRT) instead of exiting cleanly.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # pygls closed stdout on `exit`
            pass
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def _load(args: argparse.Namespace):
    from inference import Engine

    return Engine.load(args.model, family=args.family, device=args.device, precision=args.precision,
                       progress=_progress)


def _complete(args: argparse.Namespace) -> int:
    """The same pipeline as the server's inline completion (context, stop rules, post-processing)."""
    from lsp_server.completion.prompt import build_prompt, run_completion
    from lsp_server.config import Settings
    from lsp_server.languages import spec_for
    from lsp_server.positions import line_starts, to_offset

    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InferenceError(f"cannot read {args.file}: {exc}") from None
    try:
        offset = to_offset(text, args.line, args.col)
    except ValueError:
        raise InferenceError(f"position {args.line}:{args.col} is outside the file "
                             f"({len(line_starts(text))} lines)") from None
    engine = _load(args)
    settings = Settings(max_tokens_single_line=args.max_tokens, max_tokens_multi_line=args.max_tokens)
    spec = spec_for(None, str(args.file))
    prompt = build_prompt(engine, settings, args.file.resolve().as_uri(), spec.name if spec else None, text, offset)
    suggestion, completion = run_completion(engine, prompt) if prompt is not None else (None, None)
    if args.json:
        print(json.dumps({"text": suggestion or "", "raw": completion.as_dict() if completion else None},
                         ensure_ascii=False))
    else:
        print(suggestion or "")
    return 0


def _model_prepare(args: argparse.Namespace) -> int:
    engine = _load(args)
    print(f"ready: {engine.info.name} ({engine.info.precision}) at {engine.info.path}")
    return 0


def _model_list(args: argparse.Namespace) -> int:
    from inference.catalog import CATALOG, default_model

    try:
        default = default_model("cpu")[0].name
    except InferenceError:
        default = None
    rows = [{"name": m.name, "installed": m.installed(), "default": m.name == default, "title": m.title,
             "family": m.family, "licence": m.licence, "precision": m.precision, "file_mb": round(m.size / 2**20),
             "disk_mb": m.disk_mb, "ram_mb": m.ram_mb, "first_token_ms": m.first_token_ms,
             "decode_tok_s": m.decode_tok_s, "note": m.note, "install": m.install_command()} for m in CATALOG]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'':2}{'name':<20} {'installed':<9} {'file':>7} {'RAM':>7} {'1st token':>9} {'decode':>10}  note")
    for r in rows:
        def fig(value, unit):
            return f"{value}{unit}" if value is not None else "–"
        print(f"{'*' if r['default'] else ' ':2}{r['name']:<20} {'yes' if r['installed'] else 'no':<9} "
              f"{r['file_mb']:>5}MB {fig(r['ram_mb'], 'MB'):>7} {fig(r['first_token_ms'], 'ms'):>9} "
              f"{fig(r['decode_tok_s'], 'tok/s'):>10}  {r['note']}")
    print("\n* = used when no model is configured (CPU).  Figures measured on 2 CPU cores (benchmarks/results/).")
    for r in rows:
        if not r["installed"]:
            print(f"install {r['name']}: {r['install']}")
    return 0


def _model_info(args: argparse.Namespace) -> int:
    info = _load(args).info
    if args.json:
        print(json.dumps(info.as_dict()))
    else:
        for key, value in info.as_dict().items():
            print(f"{key:>12}: {value}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    """What infill would run on, and why; a missing piece is named with the command that fixes it."""
    if args.backend:
        return _doctor_backend(args)
    import onnxruntime
    import onnxruntime_genai

    from inference.cache import cache_root
    from inference.catalog import default_model
    from inference.engine import choose_device

    device, reason = choose_device("auto")
    report: dict = {"version": __version__, "device": device, "device_reason": reason,
                    "onnxruntime": onnxruntime.__version__, "providers": onnxruntime.get_available_providers(),
                    "onnxruntime_genai": onnxruntime_genai.__version__, "cache": str(cache_root()),
                    "cache_mb": _cache_usage()}
    try:
        model, why = default_model(device)
        report.update(default_model=model.name, default_model_title=model.title, precision=model.precision,
                      default_model_reason=why,
                      # a converted folder in the cache: the first start takes seconds, not minutes
                      converted=any(model.cache_dir().glob(f"onnx-{model.precision}-*")))
    except InferenceError as exc:
        report.update(default_model=None, problem=str(exc))
    if args.json:
        print(json.dumps(report))
        return 0 if report["default_model"] else 1
    print(f"device: {device} ({reason})")
    print(f"onnxruntime {report['onnxruntime']} providers: {', '.join(report['providers'])}")
    print(f"onnxruntime-genai {report['onnxruntime_genai']}")
    usage = ", ".join(f"{name} {mb:,} MB" for name, mb in report["cache_mb"].items())
    print(f"cache: {report['cache']} ({usage or 'empty'})")
    print(f"infill {__version__}")
    if not report["default_model"]:
        print(f"default model: missing — {report['problem']}")
        return 1
    print(f"default model: {model.name} ({model.title}, {model.precision}) — {why}")
    return 0


def _cache_usage() -> dict[str, int]:
    """MB on disk per part of the cache (models, search indexes, search model): what a user can reclaim."""
    from inference.cache import cache_root
    from lsp_server.search.store import index_dir

    parts = {"models": cache_root() / "models", "search indexes": index_dir(), "search model": cache_root() / "embed"}
    usage = {}
    for name, folder in parts.items():
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
        if size:
            usage[name] = round(size / 1e6)
    return usage


def _doctor_backend(args: argparse.Namespace) -> int:
    """A serving engine: reachable, which models, one 1-token completion and its latency, FIM native or not."""
    import time

    from inference import FimParts
    from inference.remote import RemoteBackend, RemoteConfig

    problems: list[str] = []
    backend = RemoteBackend(RemoteConfig(args.backend, args.kind, args.backend_model, args.api_key_env,
                                         args.timeout_ms), family=args.family,
                            on_problem=lambda p: problems.append(p) if p else None,
                            warn=lambda w: print(f"warning: {w.removeprefix('infill: ')}"))
    print(f"backend: {backend.url} ({args.kind})")
    if problems:
        print(f"unreachable: {problems[0]}")
        return 1
    print(f"models: {', '.join(backend.served_models) or '(none listed)'}")
    print(f"model: {backend.model} (family {backend.family.name}, context {backend.max_length} tokens, "
          f"{'chat template' if backend.is_instruct else 'no chat template'})")
    start = time.perf_counter()
    try:
        result = backend.complete(FimParts("def add(a, b):\n    return", "\n"), max_new_tokens=1)
    except InferenceError as exc:
        print(f"completion: failed — {exc}")
        return 1
    took = (time.perf_counter() - start) * 1000
    print(f"completion: 1 token {result.text!r} in {took:.0f} ms (first token {result.ttft_ms:.0f} ms)")
    if backend.native_fim:
        print("FIM: native (llama.cpp /infill renders the model's own FIM tokens)")
    elif backend.family.supports_fim:
        print(f"FIM: templated here ({backend.family.name} template over the completions endpoint)")
    else:
        print("FIM: none (the model id names no FIM family: prefix-only completion; set `family` if it has one)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from lsp_server.demo import run_demo

    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())
