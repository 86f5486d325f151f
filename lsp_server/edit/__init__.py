"""Edit with instruction: a selection and an instruction in, a validated replacement out.

Everything but `feature` is plain Python (no LSP), so the benchmarks and the CLI run exactly what the
`infill.edit` command runs; `feature` turns positions into offsets and the result into a `WorkspaceEdit`.
"""
