"""Edit with instruction: a selection and an instruction in, a validated replacement out.

`task` (the edit as data) → `prompts` (context, presets, chat and FIM prompts) → `run` (generate, retry
once) → `reply` (extract, re-indent, validate); `docstring` documents definitions structurally instead.
All of it is plain Python, so the benchmarks run exactly what the `infill.edit` command runs; only
`feature` speaks LSP: it turns positions into offsets and the result into a versioned `WorkspaceEdit`.
"""
