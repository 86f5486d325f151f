"""infill's inference library: local code models on ONNX Runtime, knowing nothing of LSP.

    from inference import Engine, FimParts
    engine = Engine.load()                      # embedded default model, prepared on first use
    print(engine.complete(FimParts("def add(a, b):\n    return", "\n")).text)
"""

from inference.errors import InferenceError

__all__ = ["InferenceError"]
