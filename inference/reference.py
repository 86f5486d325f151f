"""A torch/transformers reference backend: what the ONNX engine's greedy output is checked against.

Not on the hot path. It loads the float weights of a Hugging Face folder (safetensors only: pickled
checkpoints can run code) and decodes greedily with its own KV cache, token ids in, token ids out, so a
test can compare it with the engine position by position. The benchmark also times it as the baseline.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from inference.errors import InferenceError


@dataclass
class ReferenceRun:
    """Greedy ids plus the timings the latency benchmark compares against."""

    ids: list[int]
    ttft_ms: float  # prefill of the whole prompt and the first token
    decode_tok_s: float  # tokens per second after the first


class TorchReference:
    """Greedy decoding of a Hugging Face causal LM with torch, float32 on CPU."""

    def __init__(self, hf_dir: str | Path, *, threads: int = 2) -> None:
        hf_dir = Path(hf_dir)
        if not any(hf_dir.glob("*.safetensors")):
            raise InferenceError(f"{hf_dir} has no .safetensors weights; the reference backend loads no pickles")
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self._torch = torch
        try:
            self.model = AutoModelForCausalLM.from_pretrained(
                str(hf_dir), dtype=torch.float32, use_safetensors=True, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise InferenceError(f"cannot load {hf_dir} with transformers: {exc}") from None
        self.model.eval()

    def greedy(self, input_ids: Sequence[int], max_new_tokens: int, stop_ids: Iterable[int] = ()) -> list[int]:
        """The greedy continuation of `input_ids`, ending before the first id in `stop_ids`."""
        return self.run(input_ids, max_new_tokens, stop_ids).ids

    def run(self, input_ids: Sequence[int], max_new_tokens: int, stop_ids: Iterable[int] = ()) -> ReferenceRun:
        """Greedy decoding with timings: prefill once, then one token per forward pass on the KV cache."""
        if not input_ids:
            raise InferenceError("empty prompt: give the reference model some ids to continue")
        torch = self._torch
        stops = set(stop_ids)
        out: list[int] = []
        start = time.perf_counter()
        first_at = start
        with torch.inference_mode():
            feed = torch.tensor([list(input_ids)], dtype=torch.long)
            past = None
            for step in range(max_new_tokens):
                result = self.model(input_ids=feed, past_key_values=past, use_cache=True)
                past = result.past_key_values
                token = int(torch.argmax(result.logits[0, -1]))
                if step == 0:
                    first_at = time.perf_counter()
                if token in stops:
                    break
                out.append(token)
                feed = torch.tensor([[token]], dtype=torch.long)
        end = time.perf_counter()
        decode_s = end - first_at
        rate = (len(out) - 1) / decode_s if len(out) > 1 and decode_s > 0 else 0.0
        return ReferenceRun(out, (first_at - start) * 1000, rate)
