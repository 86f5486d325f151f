"""Inline completion: what the model sees, how it is asked, and which of its answer is shown.

`context` fits the code around the cursor (and recent edits elsewhere) into a token budget, `prompt`
turns that into an engine prompt and runs it, `postprocess` cuts and checks the answer. All three are
plain Python, usable from the CLI and the benchmarks; only `feature` speaks LSP.
"""
