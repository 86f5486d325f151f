"""The install steps agree everywhere: each document that says how to install infill says it with the
README's command, and says no other `pip install` of infill (issue 15, point 6)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Every place a user reads install steps; the extension's "Copy Install Command" copies INSTALL_COMMAND.
DOCS = [
    "README.md",
    "editors/README.md",
    "editors/nvim/README.md",
    "editors/nvim/doc/infill.txt",
    "vscode-extension/README.md",
    "vscode-extension/src/executable.ts",
]


def contract(suffix: str) -> str:
    """One of README's two contract commands (the one ending in `suffix`), from its fenced block."""
    commands = re.findall(r"^```sh\n(python3 -m venv .*)\n```", README, re.M)
    found = [c for c in commands if c.endswith(suffix)]
    assert len(found) == 1, f"README has no single contract command ending in {suffix!r}: {commands}"
    return found[0]


DEMO = contract(" && infill demo")
TESTS = contract(" && python -m pytest -q tests")
INSTALL = DEMO.removesuffix(" && infill demo")  # what installs the server and its model
ALLOWED = {INSTALL, TESTS, "pip install -e '.[gpu]'"}  # the GPU runtime is an addition, on top of INSTALL


def pip_commands(text: str) -> list[str]:
    """Each command in `text` that runs `pip install`: from its `python3 -m venv` (or `pip`) to the end of
    the command (a closing backtick or quote, a shell comment, or the end of the line)."""
    found = []
    for line in text.splitlines():
        at = line.find("pip install")
        if at < 0:
            continue
        venv = line.rfind("python3 -m venv", 0, at)
        start = venv if venv >= 0 else max(line.rfind(c, 0, at) for c in ' `"') + 1
        command = re.split(r"`|\"|\s+#|\s+--\s", line[start:])[0].strip().rstrip(";,")
        found.append(command)
    return found


def test_readme_contract_commands_are_intact() -> None:
    assert DEMO == "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[coder]' && infill demo"
    assert TESTS.startswith(INSTALL.replace("[coder]", "[coder,test]"))


@pytest.mark.parametrize("doc", DOCS)
def test_install_steps_are_readmes(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert INSTALL in text, f"{doc} does not give README's install command {INSTALL!r}"
    commands = pip_commands(text)
    assert commands, doc
    other = [c for c in commands if c not in ALLOWED and not c.endswith(" && infill demo")]
    assert not other, f"{doc} installs infill differently from README ({INSTALL!r}): {other}"


def test_the_extractor_sees_what_a_reader_sees() -> None:
    """The check above can fail: a stale command in any of the shapes the docs use is extracted."""
    assert pip_commands("1. `pip install -e '/path/to/infill[coder]'` from a checkout") == [
        "pip install -e '/path/to/infill[coder]'"]
    assert pip_commands("    pip install infill-lsp   # from PyPI") == ["pip install infill-lsp"]
    assert pip_commands('export const INSTALL_COMMAND = "pip install infill-lsp";') == ["pip install infill-lsp"]
    assert pip_commands(f"run `{INSTALL}` once") == [INSTALL]
