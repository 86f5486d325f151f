"""infill's inference library: local code models on ONNX Runtime, knowing nothing of LSP.

    from inference import Engine, FimParts
    engine = Engine.load()                      # embedded default model, prepared on first use
    print(engine.complete(FimParts("def add(a, b):\n    return", "\n")).text)
"""

from inference.backend import Backend, Completion, GenerationStats, ModelInfo, StreamCut
from inference.engine import Engine, choose_device
from inference.errors import InferenceError
from inference.registry import FAMILIES, Family, FimParts, detect_family, family_by_name

__all__ = ["Backend", "Completion", "Engine", "FAMILIES", "Family", "FimParts", "GenerationStats", "InferenceError",
           "ModelInfo", "StreamCut", "choose_device", "detect_family", "family_by_name"]
