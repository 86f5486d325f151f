"""Engine latency on the default model, against transformers+torch measured in the same run (issue 2, point 7).

    python benchmarks/engine_latency.py [--runs 5] [--prompt-tokens 500] [--new-tokens 64] [--model DIR]
                                        [--skip-torch] [--llama]

- ttft cold: a ~500-token code prompt the engine has never seen (a different stdlib module each run).
- ttft warm: the same prompt after a 1-5 token edit at its end (typing), so only the tail is computed.
- decode: tokens/s after the first token, greedy, no stop strings; with prompt-lookup drafts (what ships)
  and, as the baseline in the same run, without them (one forward pass per token). Both give the same tokens.
- peak RSS of this process after the ONNX runs (before torch is imported).
- torch: `inference.reference.TorchReference` (greedy with a KV cache, 2 threads) on the same prompts.
- llama.cpp (`--llama`): llama.cpp's own HTTP server (PyPI `xllamacpp`, 2 threads, `cache_prompt`) on the
  default model's GGUF, started here after the engine's runs, with the same prompts and the same typing:
  each figure is the wall time of an HTTP request on 127.0.0.1, as a remote backend would see it.
Every number is the median of --runs runs after one warm-up. Run it alone: ONNX Runtime's threads spin, so
anything running beside it distorts the result. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import struct
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference import Engine  # noqa: E402

MODULES = ("textwrap.py", "argparse.py", "difflib.py", "configparser.py", "calendar.py", "csv.py", "shlex.py",
           "gettext.py", "dataclasses.py", "statistics.py", "fractions.py", "tokenize.py", "pprint.py")
TYPED = ["\n", "    ", "re", "sult", " =", " self", ".", "_", "value"]  # keystroke-sized edits, 1-5 tokens each
TARGETS = {"ttft_warm_ms": 60.0, "decode_tok_s": 30.0, "peak_rss_mb": 700.0}  # issue 11, the default model
COLD_SLACK = 1.15  # cold ttft within 15 % of the compute floor


def code_prompt(engine: Engine, module: str, tokens: int) -> str:
    """The first `tokens` tokens of a stdlib module, after its docstring and imports, as text."""
    text = (Path(sysconfig.get_paths()["stdlib"]) / module).read_text(encoding="utf-8")
    start = text.find("\ndef ") if "\ndef " in text else 0
    return engine.decode(engine.encode(text[start + 1:])[:tokens])


def timed_first_token(engine: Engine, prompt: str) -> float:
    """Wall time of a whole one-token request: tokenize, prefill (or reuse), first token."""
    start = time.perf_counter()
    engine.complete(prompt, max_new_tokens=1)
    return (time.perf_counter() - start) * 1000


def decode_rate(engine: Engine, prompt: str, new_tokens: int, lookup: bool = True) -> tuple[float, float]:
    """(tokens/s after the first token, share of drafted tokens the model kept)."""
    result = engine.complete(prompt, max_new_tokens=new_tokens, lookup=lookup)
    steps = result.generated_tokens - 1
    seconds = (result.total_ms - result.ttft_ms) / 1000
    kept = result.accepted_tokens / result.drafted_tokens if result.drafted_tokens else 0.0
    return (steps / seconds if steps > 0 and seconds > 0 else 0.0), kept


def _record(rate_and_kept: tuple[float, float], kept: list[float]) -> float:
    kept.append(rate_and_kept[1])
    return rate_and_kept[0]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _float_weights(engine) -> Path | None:
    """The model's float folder (rebuilt from its GGUF on first use), or None for an ONNX-only model."""
    from inference.errors import InferenceError
    from inference.sources import float_weights

    try:
        return float_weights(engine.prepared, _say)
    except InferenceError as exc:
        print(f"[infill] no float weights: {exc}", file=sys.stderr)
        return None


def matmul_params(hf_dir: Path) -> int:
    """Parameters touched per token by matrix products (all weights but the input embedding table)."""
    total = 0
    for file in hf_dir.glob("*.safetensors"):
        with open(file, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for name, meta in header.items():
            if name != "__metadata__" and "embed_tokens" not in name:
                count = 1
                for dim in meta["shape"]:
                    count *= dim
                total += count
    config = json.loads((hf_dir / "config.json").read_text())
    if config.get("tie_word_embeddings"):  # the tied output projection is a matmul over the vocabulary
        total += config["vocab_size"] * config["hidden_size"]
    return total


def llama_cpp_figures(prompts: list[str], typed: list[str], runs: int, new_tokens: int) -> dict[str, float]:
    """Cold and warm first token and decode rate of a real llama.cpp server on the default model's GGUF,
    for the same prompts and typing as the engine (the server is started here and stopped after)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from llama_server import LlamaServer, default_gguf

    server = LlamaServer(default_gguf())
    server.start()
    try:
        def post(prompt: str, n_predict: int) -> tuple[float, dict]:
            body = {"prompt": prompt, "n_predict": n_predict, "cache_prompt": True, "temperature": 0.0,
                    "ignore_eos": True}
            request = urllib.request.Request(server.url + "/completion", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            start = time.perf_counter()
            with urllib.request.urlopen(request, timeout=300) as response:
                answer = json.loads(response.read())
            return (time.perf_counter() - start) * 1000, answer.get("timings", {})

        cold = median_runs(lambda i: post(prompts[i + 1], 1)[0], runs)
        post(typed[0], 1)
        warm = median_runs(lambda i: post(typed[i + 2], 1)[0], min(runs, len(TYPED) - 1))

        def rate(i: int) -> float:
            timings = post(prompts[i + 1], new_tokens)[1]
            return timings["predicted_n"] / timings["predicted_ms"] * 1000 if timings.get("predicted_ms") else 0.0

        decode = median_runs(rate, runs)
    finally:
        server.kill()
    return {"llama_ttft_cold_ms": round(cold, 1), "llama_ttft_warm_ms": round(warm, 1),
            "llama_decode_tok_s": round(decode, 1)}


def median_runs(fn, runs: int) -> float:
    fn(-1)  # warm-up
    return statistics.median(fn(i) for i in range(runs))


def _say(message: str, _fraction: float | None = None) -> None:
    print(f"[infill] {message}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=500)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--model", help="a catalogue name or a model path (default: what the server picks)")
    parser.add_argument("--gflops", type=float, default=100.0, help="the CPU's sustained GFLOP/s (compute floor)")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--llama", action="store_true", help="measure llama.cpp's server on the same GGUF too")
    args = parser.parse_args()
    if args.runs + 1 > len(MODULES):
        parser.error(f"--runs at most {len(MODULES) - 1} (one unseen module per cold run)")

    load_start = time.perf_counter()
    engine = Engine.load(args.model, progress=_say)
    load_ms = (time.perf_counter() - load_start) * 1000
    genai = json.loads((engine.prepared.onnx_dir / "genai_config.json").read_text())
    threads = genai["model"]["decoder"].get("session_options", {}).get("intra_op_num_threads")
    prompts = [code_prompt(engine, m, args.prompt_tokens) for m in MODULES[:args.runs + 1]]
    prompt_tokens = statistics.median(len(engine.encode(p)) for p in prompts)

    ttft_cold = median_runs(lambda i: timed_first_token(engine, prompts[i + 1]), args.runs)
    base = prompts[0]
    engine.complete(base, max_new_tokens=1)
    typed = [base]
    for piece in TYPED:
        typed.append(typed[-1] + piece)
    ttft_warm = median_runs(lambda i: timed_first_token(engine, typed[i + 2]), min(args.runs, len(TYPED) - 1))
    decode_plain = median_runs(lambda i: decode_rate(engine, prompts[i + 1], args.new_tokens, lookup=False)[0],
                               args.runs)
    kept_rates: list[float] = []
    decode = median_runs(lambda i: _record(decode_rate(engine, prompts[i + 1], args.new_tokens), kept_rates),
                         args.runs)
    kept = statistics.median(kept_rates[1:])  # without the warm-up
    rss = peak_rss_mb()

    hf_dir = _float_weights(engine) if args.gflops or not args.skip_torch else None
    floor_ms = (2 * matmul_params(hf_dir) * prompt_tokens / (args.gflops * 1e9) * 1000) if hf_dir else None
    torch_cold = torch_decode = None
    if not args.skip_torch and hf_dir is not None:
        from inference.reference import TorchReference

        reference = TorchReference(hf_dir, threads=2)
        ids = [engine.encode(p) for p in prompts]
        runs = [reference.run(ids[i], args.new_tokens) for i in (0, *range(1, args.runs + 1))][1:]
        torch_cold = statistics.median(r.ttft_ms for r in runs)
        torch_decode = statistics.median(r.decode_tok_s for r in runs)

    llama = llama_cpp_figures(prompts, typed, args.runs, args.new_tokens) if args.llama else {}
    report = {
        "model": engine.info.name, "precision": engine.info.precision, "device": engine.info.device,
        "threads": threads, "cpu_count": os.cpu_count(), "runs": args.runs, "prompt_tokens": prompt_tokens,
        "new_tokens": args.new_tokens, "load_ms": round(load_ms, 1),
        "ttft_cold_ms": round(ttft_cold, 1), "ttft_warm_ms": round(ttft_warm, 1), "decode_tok_s": round(decode, 1),
        "decode_plain_tok_s": round(decode_plain, 1), "lookup_speedup": round(decode / decode_plain, 2),
        "draft_kept_rate": round(kept, 3),
        "peak_rss_mb": round(rss, 1), "compute_floor_ms": round(floor_ms, 1) if floor_ms else None,
        "torch_ttft_cold_ms": round(torch_cold, 1) if torch_cold else None,
        "torch_decode_tok_s": round(torch_decode, 1) if torch_decode else None,
        "ttft_cold_speedup_vs_torch": round(torch_cold / ttft_cold, 2) if torch_cold else None,
        "decode_speedup_vs_torch": round(decode / torch_decode, 2) if torch_decode else None,
        **llama,
        **({"ttft_warm_vs_llama": round(llama["llama_ttft_warm_ms"] / ttft_warm, 2),
            "decode_vs_llama": round(decode / llama["llama_decode_tok_s"], 2)} if llama else {}),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print_table(report)
    print(json.dumps(report))
    return 0


def print_table(r: dict) -> None:
    def verdict(ok: bool | None) -> str:
        return "" if ok is None else ("ok" if ok else "MISSED")

    def other(key: str, unit: str) -> str:
        value = r.get(key)
        return f"{value:.1f} {unit}" if value else "-"

    floor = r["compute_floor_ms"]
    rows = [
        ("time to first token, cold", f"{r['ttft_cold_ms']:.0f} ms",
         f"≤ {floor * COLD_SLACK:.0f} ms (floor {floor:.0f})" if floor else "",
         verdict(r["ttft_cold_ms"] <= floor * COLD_SLACK) if floor else "",
         other("torch_ttft_cold_ms", "ms"), other("llama_ttft_cold_ms", "ms")),
        ("time to first token, warm", f"{r['ttft_warm_ms']:.1f} ms", f"≤ {TARGETS['ttft_warm_ms']:.0f} ms",
         verdict(r["ttft_warm_ms"] <= TARGETS["ttft_warm_ms"]), "-", other("llama_ttft_warm_ms", "ms")),
        ("decode", f"{r['decode_tok_s']:.1f} tok/s", f"≥ {TARGETS['decode_tok_s']:.0f} tok/s",
         verdict(r["decode_tok_s"] >= TARGETS["decode_tok_s"]),
         other("torch_decode_tok_s", "tok/s"), other("llama_decode_tok_s", "tok/s")),
        ("  without lookup drafts", f"{r['decode_plain_tok_s']:.1f} tok/s",
         f"(lookup {r['lookup_speedup']:.2f}×, {r['draft_kept_rate']:.0%} of drafts kept)", "", "-", "-"),
        ("peak RSS", f"{r['peak_rss_mb']:.0f} MB", f"≤ {TARGETS['peak_rss_mb']:.0f} MB",
         verdict(r["peak_rss_mb"] <= TARGETS["peak_rss_mb"]), "-", "-"),
    ]
    print(f"{r['model']} {r['precision']} on {r['device']}, {r['threads']} threads, {r['prompt_tokens']:.0f}-token "
          f"prompt, median of {r['runs']} runs (1-min load average {r['load_average_1m']})")
    print(f"{'':28}{'engine':>14}  {'target':<26}{'':8}{'torch':>12}{'llama.cpp':>14}")
    for name, value, target, ok, torch_value, llama_value in rows:
        print(f"{name:28}{value:>14}  {target:<26}{ok:8}{torch_value:>12}{llama_value:>14}")
    if "decode_vs_llama" in r:
        print(f"engine / llama.cpp: warm first token {r['ttft_warm_vs_llama']:.2f}× as fast, "
              f"decode {r['decode_vs_llama']:.2f}× (issue 11: ≥ 1.0× both)")


if __name__ == "__main__":
    sys.exit(main())
