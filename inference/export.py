"""Turn a model into what the engine runs: GGUF → Hugging Face weights → ONNX with a KV cache.

Every product is built in a temporary directory and renamed into place only when complete, with a
manifest of file sizes, so a killed conversion or a truncated file is detected and rebuilt — never used.
Conversion runs in a subprocess (onnxruntime-genai's model builder) so that nothing it prints can reach
stdout, which is the LSP channel when the server runs over stdio.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from inference.cache import Progress
from inference.errors import InferenceError

BUILDER_PRECISIONS = ("fp32", "fp16", "int8", "int4")
# Bumped whenever what an export produces changes, so caches built by an older version are rebuilt.
# 2: logits for the last LOGIT_ROWS positions (verifying lookup drafts), not only the last one.
# 3: a quantized model that ties its embeddings shares one 4-bit table between input and output.
EXPORT_REVISION = 3
LOGIT_ROWS = 8


def gguf_to_hf(gguf: Path, out: Path, progress: Progress) -> None:
    """De-quantize a GGUF into a float32 Hugging Face folder (weights as safetensors, tokenizer files)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    progress(f"reading {gguf.name}", 0.05)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - a broken install
        raise InferenceError(f"converting a GGUF needs transformers ({exc}); reinstall infill-lsp") from None
    with contextlib.redirect_stdout(sys.stderr):
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            progress("de-quantizing GGUF weights", 0.15)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
        except (ValueError, OSError, KeyError, RuntimeError) as exc:
            raise InferenceError(f"cannot parse GGUF file {gguf}: {exc}") from None
        # The weights are plain floats now; transformers only refuses to save because the GGUF quantizer
        # marker is still attached.
        model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it as a module
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if tie_duplicate_embeddings(model):
            progress("input and output embeddings are one table: tied", 0.25)
        progress("saving Hugging Face weights", 0.3)
        model.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out))


def tie_duplicate_embeddings(model, tolerance: float = 0.1) -> bool:
    """Tie a model's input embeddings to its output projection when a GGUF stored one table twice.

    llama.cpp writes a tied table twice at different quantizations (Qwen2.5-Coder-0.5B: `token_embd`
    Q5_0, `output` Q8_0; 4.4 % apart, where two unrelated tables differ by over 100 %). Left untied, the
    export keeps a float copy of the input table (544 MB for a 152k vocabulary); tied, both uses share
    one 4-bit table. The output copy (the finer quantization, and the more sensitive use) is kept.
    """
    import torch

    if getattr(model.config, "tie_word_embeddings", False):
        return False
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    if inputs is None or outputs is None or inputs.weight.shape != outputs.weight.shape:
        return False
    with torch.no_grad():
        gap = float(torch.linalg.norm(inputs.weight - outputs.weight) / torch.linalg.norm(outputs.weight))
        if gap > tolerance:
            return False
        inputs.weight.copy_(outputs.weight)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    return True


def hf_to_onnx(hf_dir: Path, out: Path, precision: str, progress: Progress, threads: int | None = None) -> None:
    """Export a Hugging Face causal LM to an onnxruntime-genai folder with past key/values."""
    if precision not in BUILDER_PRECISIONS:
        raise InferenceError(f"unknown precision {precision!r}; use one of {', '.join(BUILDER_PRECISIONS)}")
    extra = ["prune_lm_head=true", *quantization_options(hf_dir, precision)]
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out),
           "-p", precision, "-e", "cpu", "-c", str(out / ".builder-cache"), "--extra_options", *extra]
    progress(f"exporting to ONNX ({precision})", 0.5)
    log = out.parent / f"{out.name}.builder.log"
    with open(log, "w") as fh:
        result = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    shutil.rmtree(out / ".builder-cache", ignore_errors=True)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        if "No space left on device" in tail[0] or "File too large" in tail[0]:
            raise InferenceError(f"ONNX export of {hf_dir} failed: the disk is full under {out.parent}; free some "
                                 f"space (or set INFILL_CACHE_DIR elsewhere) and retry (full log: {log})")
        raise InferenceError(f"ONNX export of {hf_dir} failed: {tail[0][:300]} (full log: {log})")
    log.unlink(missing_ok=True)
    keep_last_logits(out, LOGIT_ROWS)
    tune_genai_config(out, threads=threads)
    progress("ONNX model ready", 0.95)


def quantization_options(hf_dir: Path, precision: str) -> list[str]:
    """The builder options for a precision. Asymmetric 4-bit weights keep more of a small model. A model
    that ties its embeddings (Qwen2.5-Coder) shares one 4-bit table for the input gather and the output
    projection: left apart, the input table stays fp32 (544 MB of Qwen2.5-Coder-0.5B's 841 MB)."""
    if precision not in ("int4", "int8"):
        return []
    options = ["is_symmetric=false", "accuracy_level=4"]
    try:
        tied = bool(json.loads((hf_dir / "config.json").read_text()).get("tie_word_embeddings", False))
    except (OSError, ValueError):
        tied = False
    if precision == "int4" and tied:
        # `algo_config=rtn` is the default round-to-nearest under the names the builder's tied gather looks
        # for; with the default naming it gathers from the float weight and the model fails to load.
        return [*options, "shared_embeddings=true", "op_types_to_quantize=MatMul/Gather", "algo_config=rtn"]
    return [*options, "shared_embeddings=false"]


def keep_last_logits(onnx_dir: Path, rows: int) -> bool:
    """Make the graph compute logits for the last `rows` positions of each forward pass, not only the last.

    The builder's `prune_lm_head` applies the output projection (a 49k-wide matmul) to the last position
    only: right for plain decoding, but it leaves nothing to check a drafted token against. Projecting
    the last few positions keeps prefill cheap and lets one pass verify a short draft. onnxruntime-genai
    allocates the logits output as one row per input token, so the rows are padded back to that shape
    (the padding stays zero; only the last rows are read). Returns False, changing nothing, when the graph
    lacks the builder's prune pattern (the engine then decodes without drafts).
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    path = onnx_dir / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    consts = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    consumers = {name: n for n in graph.node for name in n.input}
    producer = {out: n for n in graph.node for out in n.output}
    prune = next((n for n in graph.node if n.op_type == "Gather" and n.input[1] in consts
                  and any(a.name == "axis" and a.i == 1 for a in n.attribute)
                  and int(numpy_helper.to_array(consts[n.input[1]].attribute[0].t).reshape(-1)[0]) == -1
                  and getattr(consumers.get(n.output[0]), "op_type", "") == "Unsqueeze"), None)
    if prune is None or "logits" not in producer:
        return False
    unsqueeze = consumers[prune.output[0]]
    hidden = prune.input[0]

    def const(name: str, value: list[int]) -> str:
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), f"/infill/rows/{name}"))
        return f"/infill/rows/{name}"

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        out = f"/infill/rows/{name}/output_0"
        nodes.append(helper.make_node(op, inputs, [out], name=f"/infill/rows/{name}", **attrs))
        return out

    nodes: list = []
    starts, ends, axes = const("starts", [-rows]), const("ends", [np.iinfo(np.int64).max]), const("axes", [1])
    nodes.append(helper.make_node("Slice", [hidden, starts, ends, axes], [unsqueeze.output[0]],
                                  name="/infill/rows/Slice"))
    position = list(graph.node).index(prune)
    graph.node.remove(unsqueeze)
    graph.node.remove(prune)
    for i, n in enumerate(nodes):
        graph.node.insert(position + i, n)

    nodes = []
    last = producer["logits"]
    last.output[list(last.output).index("logits")] = "/infill/rows/projected"
    one, two = const("one", [1]), const("two", [2])
    length = node("Slice", [node("Shape", [hidden], "ShapeIn"), one, two], "Length")
    kept = node("Slice", [node("Shape", ["/infill/rows/projected"], "ShapeOut"), one, two], "Kept")
    pads = node("Concat", [const("zero1", [0]), node("Sub", [length, kept], "Missing"), const("zero4", [0, 0, 0, 0])],
                "Pads", axis=0)
    nodes.append(helper.make_node("Pad", ["/infill/rows/projected", pads], ["logits"], name="/infill/rows/Pad"))
    graph.node.extend(nodes)
    for output in graph.output:
        if output.name == "logits":
            output.type.tensor_type.shape.dim[1].dim_param = "sequence_length"
    onnx.save(model, str(path))
    return True


def tune_genai_config(onnx_dir: Path, threads: int | None = None) -> None:
    """Pin ONNX Runtime's thread count: its spinning threads must not outnumber the cores."""
    path = onnx_dir / "genai_config.json"
    cfg = json.loads(path.read_text())
    opts = cfg["model"]["decoder"].setdefault("session_options", {})
    opts["intra_op_num_threads"] = threads or min(4, os.cpu_count() or 2)
    opts["inter_op_num_threads"] = 1
    path.write_text(json.dumps(cfg, indent=4))
