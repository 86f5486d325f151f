"""Which precision may ship? Greedy agreement with fp32 beside speed and memory, for SmolLM2-135M (the
catalogue's `smollm2-135m`, whose GGUF holds Q4_1 blocks). Since issue 11, precision is chosen by task
quality (fim_quality.py); this probe stays for its speed, memory and exact-Q4_1 figures.

Variants, each exported once into the infill cache (`probes/`):
- fp32 — what ships today.
- int4-rtn — onnxruntime-genai's builder re-quantizes the de-quantized weights (asymmetric, block 32,
  int8 activations): what `precision="int4"` exports.
- q4_1-f32 — the GGUF's own Q4_1 blocks carried over bit for bit, float activations. ONNX Runtime's
  4-bit MatMul takes only integer zero points, and Q4_1's per-block minimum is not a multiple of its
  scale, so each matmul keeps q*scale in MatMulNBits (zero point 0) and adds blocksum(x) @ minimum. The
  tied Q8_0 output projection becomes two exact 4-bit halves (16*hi + lo) over a doubled input.
- q4_1-i8 — the same weights; activations rounded to int8 per block (accuracy_level 4, the fast kernel).

Each variant runs in its own process (peak RSS is per process): greedy ids on the quality gate's prompts
(the same prompts and agreement rule as tests/test_engine.py), decode tok/s on a 500-token code prompt
(with lookup drafts), cold time to first token, peak RSS. Task quality is a separate, slower run:
`python benchmarks/fim_quality.py --model <variant dir printed here> --sets single --limit 160 --seed 1`.

    python benchmarks/precision_probe.py [--variants fp32,int4-rtn,q4_1-f32,q4_1-i8]

Prints a table, then one JSON line. Run it alone: the threads of ONNX Runtime spin.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from inference.cache import build_atomically, cache_root  # noqa: E402
from inference.catalog import by_name  # noqa: E402
from inference.export import hf_to_onnx, keep_last_logits  # noqa: E402
from inference.sources import float_weights, prepare  # noqa: E402

MODEL = "smollm2-135m"

VARIANTS = ("fp32", "int4-rtn", "q4_1-f32", "q4_1-i8")
GATE_MODULES = ("json/decoder.py", "json/encoder.py", "textwrap.py", "csv.py", "shlex.py", "fnmatch.py", "glob.py",
                "heapq.py", "bisect.py", "queue.py", "string.py", "difflib.py", "calendar.py", "argparse.py",
                "gettext.py", "configparser.py", "dataclasses.py", "functools.py", "statistics.py", "fractions.py")
GATE_TOKENS = 32
GATE_THRESHOLD = 0.90


# ------------------------------------------------------------------------------------------ the gate


def gate_prompts() -> list[str]:
    """Deterministic code prompts: from each module, 10 lines from its first function defined after line 60,
    cut in the middle of the last line so the model continues real code."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    prompts = []
    for name in GATE_MODULES:
        lines = (stdlib / name).read_text(encoding="utf-8").splitlines(keepends=True)
        start = next(i for i, line in enumerate(lines) if i > 60 and line.lstrip().startswith("def "))
        body = lines[start:start + 10]
        last = body[-1]
        cut = len(last) - len(last.lstrip()) + max(1, len(last.strip()) // 2)
        prompts.append("".join(body[:-1]) + last[:cut])
    return prompts


def agreement(ours: list[int], theirs: list[int], n: int = GATE_TOKENS) -> int:
    """Positions (of the first n) where two greedy runs agree; an early end counts as an end-of-text token."""
    a = (ours + [-1] * n)[:n]
    b = (theirs + [-1] * n)[:n]
    return sum(x == y for x, y in zip(a, b))


# ----------------------------------------------------------------------------- exact Q4_1 weights


def _q4_1(reader, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Q4_1 tensor's blocks as (q [N, blocks, 32], scale [N, blocks], minimum [N, blocks])."""
    tensor = next(t for t in reader.tensors if t.name == name)
    n, k = int(tensor.shape[1]), int(tensor.shape[0])
    raw = np.asarray(tensor.data).reshape(n, k // 32, 20)  # fp16 scale, fp16 minimum, 16 bytes of nibbles
    scale = raw[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    minimum = raw[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    q = np.concatenate([raw[..., 4:] & 0x0F, raw[..., 4:] >> 4], axis=-1)  # element j low, j + 16 high
    return q, scale, minimum


def _q8_0(reader, name: str) -> tuple[np.ndarray, np.ndarray]:
    tensor = next(t for t in reader.tensors if t.name == name)
    n, k = int(tensor.shape[1]), int(tensor.shape[0])
    raw = np.asarray(tensor.data).reshape(n, k // 32, 34)  # fp16 scale, 32 int8
    return raw[..., 2:].copy().view(np.int8), raw[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)


def _rows_like(reference: np.ndarray, q: np.ndarray, scale: np.ndarray, minimum: np.ndarray) -> np.ndarray:
    """The row order that makes the GGUF blocks equal the HF weight (llama.cpp permutes q/k rows)."""
    weight = (q * scale[..., None] + minimum[..., None]).reshape(len(q), -1)
    if np.array_equal(weight, reference):
        return np.arange(len(q))
    unit = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    order = np.argmax((reference / np.linalg.norm(reference, axis=1, keepdims=True)) @ unit.T, axis=1)
    if len(set(order.tolist())) != len(order) or np.abs(weight[order] - reference).max() > 1e-6:
        raise ValueError("GGUF blocks do not match the Hugging Face weights")
    return order


def _pack(q: np.ndarray) -> np.ndarray:
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


_PARTS = {"attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
          "attn.o_proj": ("self_attn.o_proj",), "mlp.gate_proj": ("mlp.gate_proj",),
          "mlp.up_proj": ("mlp.up_proj",), "mlp.down_proj": ("mlp.down_proj",)}
_GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}


def exact_q4_1(int4_dir: Path, out: Path, gguf: Path, hf_dir: Path, accuracy_level: int) -> None:
    """Rewrite the builder's int4 export so every weight is the GGUF's own block, bit for bit."""
    import gguf as gguf_py
    import onnx
    from onnx import helper, numpy_helper
    from safetensors.numpy import load_file

    hf = load_file(str(next(hf_dir.glob("*.safetensors"))))
    reader = gguf_py.GGUFReader(str(gguf))
    model = onnx.load(str(int4_dir / "model.onnx"))
    inits = {i.name: i for i in model.graph.initializer}

    def put(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value, name))

    def add(name: str, value: np.ndarray) -> str:
        model.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    blocks_shape = add("/probe/blocks_shape", np.array([0, 0, -1, 32], np.int64))
    last_axis = add("/probe/last_axis", np.array([-1], np.int64))
    nodes, blocksums = [], {}
    for node in model.graph.node:
        nodes.append(node)
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: a for a in node.attribute}
        attrs["accuracy_level"].i = accuracy_level
        base = node.input[1].removesuffix(".MatMul.weight_Q4")
        if base == "lm_head":  # tied Q8_0: q + 128 = 16 * hi + lo, two exact 4-bit halves over [x, x]
            q8, scale = _q8_0(reader, "token_embd.weight")
            if not np.array_equal((q8 * scale[..., None]).reshape(len(q8), -1),
                                  hf.get("lm_head.weight", hf["model.embed_tokens.weight"])):
                raise ValueError("GGUF output projection does not match the Hugging Face weights")
            unsigned = (q8.astype(np.int16) + 128).astype(np.uint8)
            put(node.input[1], _pack(np.concatenate([unsigned >> 4, unsigned & 15], axis=1)))
            put(node.input[2], np.concatenate([16 * scale, scale], axis=1))
            zero = np.concatenate([np.full(scale.shape, 8, np.uint8), np.zeros(scale.shape, np.uint8)], axis=1)
            put(node.input[3], (zero[:, 0::2] | (zero[:, 1::2] << 4)).astype(np.uint8))
            attrs["K"].i *= 2
            twice = f"{node.input[0]}/probe_twice"
            nodes.insert(len(nodes) - 1, helper.make_node("Concat", [node.input[0]] * 2, [twice], name=twice, axis=-1))
            node.input[0] = twice
            continue
        layer, part = re.fullmatch(r"model\.layers\.(\d+)\.(.*)", base).groups()  # type: ignore[union-attr]
        pieces = []
        for hf_name in _PARTS[part]:
            q, scale, minimum = _q4_1(reader, f"blk.{layer}.{_GGUF_NAMES[hf_name]}.weight")
            order = _rows_like(hf[f"model.layers.{layer}.{hf_name}.weight"], q, scale, minimum)
            pieces.append((q[order], scale[order], minimum[order]))
        q, scale, minimum = (np.concatenate(p) for p in zip(*pieces))
        put(node.input[1], _pack(q))
        put(node.input[2], scale)
        put(node.input[3], np.zeros((len(q), (q.shape[1] + 1) // 2), np.uint8))
        x = node.input[0]
        if x not in blocksums:  # sum of each 32-wide block of the input, shared by matmuls on the same x
            blocksums[x] = f"{x}/probe_blocksum"
            nodes.append(helper.make_node("Reshape", [x, blocks_shape], [f"{x}/probe_blocks"]))
            nodes.append(helper.make_node("ReduceSum", [f"{x}/probe_blocks", last_axis], [blocksums[x]], keepdims=0))
        minimum_t = add(f"{base}.probe_minimum", np.ascontiguousarray(minimum.T))
        y = node.output[0]
        node.output[0] = f"{y}/probe_scaled"
        nodes.append(helper.make_node("MatMul", [blocksums[x], minimum_t], [f"{y}/probe_minimum"]))
        nodes.append(helper.make_node("Add", [node.output[0], f"{y}/probe_minimum"], [y]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for file in int4_dir.iterdir():
        if file.is_file() and not file.name.startswith("model.onnx") and not file.name.startswith("infill-"):
            (out / file.name).write_bytes(file.read_bytes())
    onnx.save(model, str(out / "model.onnx"), save_as_external_data=True, location="model.onnx.data")


def build(variant: str) -> Path:
    """The variant's ONNX folder (exported on first use)."""
    fp32 = prepare(MODEL, precision="fp32")
    hf_dir = float_weights(fp32)
    if variant == "fp32":
        return fp32.onnx_dir
    root = cache_root() / "probes" / fp32.onnx_dir.parent.name
    say = lambda m, _f=None: print(f"[probe] {m}", file=sys.stderr)  # noqa: E731
    int4 = build_atomically(root / "int4-rtn", lambda tmp: hf_to_onnx(hf_dir, tmp, "int4", say))
    if variant == "int4-rtn":
        return int4
    level = {"q4_1-f32": 1, "q4_1-i8": 4}[variant]

    def make(tmp: Path) -> None:
        exact_q4_1(int4, tmp, by_name(MODEL).gguf(), hf_dir, level)
        keep_last_logits(tmp, 8)

    return build_atomically(root / variant, make)


# -------------------------------------------------------------------------------------- measuring


def measure(model_dir: Path) -> dict:
    """In this process: gate ids, decode rate, cold first token, peak RSS."""
    from benchmarks.engine_latency import code_prompt, decode_rate
    from inference import Engine

    engine = Engine.load(str(model_dir), family="plain")
    ids = []
    for prompt in gate_prompts():
        seen: list[int] = []
        engine.complete(prompt, max_new_tokens=GATE_TOKENS, token_rule=lambda t, _l, seen=seen: seen.append(t) or False)
        ids.append(seen)
    prompts = [code_prompt(engine, m, 500) for m in ("argparse.py", "difflib.py", "csv.py", "shlex.py")]
    start = time.perf_counter()
    engine.complete(prompts[0], max_new_tokens=1)
    cold_ms = (time.perf_counter() - start) * 1000
    rates = sorted(decode_rate(engine, p, 64)[0] for p in prompts[1:])
    return {"ids": ids, "decode_tok_s": round(rates[1], 1), "ttft_cold_ms": round(cold_ms),
            "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> int:
    """This process image's peak RSS. Not getrusage: Linux carries ru_maxrss across exec, so a child would
    report the parent's peak from before it was spawned (the parent holds the exports it just built)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "fp32" not in variants:
        variants.insert(0, "fp32")  # the reference
    results = {}
    for variant in variants:
        folder = build(variant)
        child = subprocess.run([sys.executable, __file__, "--measure", str(folder)], capture_output=True, text=True)
        if child.returncode != 0:
            print(child.stderr[-2000:], file=sys.stderr)
            return 1
        results[variant] = {**json.loads(child.stdout.strip().splitlines()[-1]), "dir": str(folder)}
    reference = results["fp32"]["ids"]
    print(f"{MODEL}: {len(reference)} gate prompts x {GATE_TOKENS} tokens (gate: >= {GATE_THRESHOLD:.0%})")
    print(f"{'variant':<10}{'agreement':>10}{'decode':>12}{'cold ttft':>11}{'peak RSS':>10}")
    line: dict[str, object] = {"benchmark": "precision_probe", "model": MODEL}
    for variant, r in results.items():
        agree = sum(agreement(a, b) for a, b in zip(r["ids"], reference)) / (GATE_TOKENS * len(reference))
        print(f"{variant:<10}{agree:>9.1%}{r['decode_tok_s']:>8.1f} t/s{r['ttft_cold_ms']:>8} ms"
              f"{r['peak_rss_mb']:>7} MB"
              f"  {r['dir']}")
        line[variant] = {"agreement": round(agree, 4), "decode_tok_s": r["decode_tok_s"],
                         "ttft_cold_ms": r["ttft_cold_ms"], "peak_rss_mb": r["peak_rss_mb"]}
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
