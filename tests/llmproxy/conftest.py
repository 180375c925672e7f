"""The `llm` fixture: the proxy's bench on the `db` backend (see helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llmproxy.helpers import LlmBench, llm_bench


@pytest.fixture
def llm(db: str, tmp_path: Path) -> Iterator[LlmBench]:
    with llm_bench(db, tmp_path) as bench:
        yield bench
