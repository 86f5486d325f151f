"""infill's inference library: local code models on ONNX Runtime, knowing nothing of LSP.

    from inference import Engine, FimParts
    engine = Engine.load()                      # embedded default model, prepared on first use
    print(engine.complete(FimParts("def add(a, b):\n    return", "\n")).text)
"""

from inference.engine import Completion, Engine, ModelInfo, choose_device
from inference.errors import InferenceError
from inference.registry import FAMILIES, Family, FimParts, detect_family, family_by_name

__all__ = ["Completion", "Engine", "FAMILIES", "Family", "FimParts", "InferenceError", "ModelInfo",
           "choose_device", "detect_family", "family_by_name"]
