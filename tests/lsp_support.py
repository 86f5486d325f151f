"""What the pytest-lsp end-to-end tests share: how to start the server and how to wait for its model."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

ROOT = Path(__file__).resolve().parents[1]
# The server from this checkout, whatever is installed: the same code the tests import.
SERVER = [sys.executable, "-c",
          f"import sys; sys.path.insert(0, {str(ROOT)!r}); from lsp_server.cli import main; sys.exit(main(['serve']))"]
MODEL_TIMEOUT = 900  # the first run converts the embedded model into the cache


async def wait_for_model(client: LanguageClient) -> None:
    """Until the server reports the model ready (its `$/progress` ends with "… ready on …")."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MODEL_TIMEOUT
    while loop.time() < deadline:
        for values in list(client.progress_reports.values()):
            for value in values:
                if isinstance(value, types.WorkDoneProgressEnd) and value.message:
                    if " ready on " in value.message:
                        return
                    if value.message.startswith("failed"):
                        pytest.fail(f"model failed to load: {value.message}")
        await asyncio.sleep(0.5)
    pytest.fail("model not ready in time")
