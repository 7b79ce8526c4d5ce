"""The int8 version records its own golden set, with the looser int8 bound, and passes it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from service.cli import main
from service.golden import Bound
from tests.test_gate import MODEL, loaded


def test_an_int8_version_passes_its_gate_with_the_int8_bound(
    cifar_repository: Path, cifar_sample_dir: Path, tmp_path: Path
) -> None:
    # Its own int8 version, not the session's: what is checked here is the golden set
    # and its gate, not the agreement figure (tests/quantize/conftest.py explains it).
    repository = Path(shutil.copytree(cifar_repository, tmp_path / "models"))
    argv = ["quantize", MODEL, "--calibration", str(cifar_sample_dir)]
    assert main([*argv, "--repository", str(repository), "--min-agreement", "0.5"]) == 0
    pool = loaded(repository)
    int8 = pool.get(MODEL, 2)
    golden = int8.version.info.golden
    assert golden is not None and golden.precision == "int8"
    assert golden.bound == Bound(rtol=5e-2, atol=1e-3)
    assert set(golden.logits) == {"onnx"}
    assert (int8.status, int8.gate) == ("ready", "passed")
    assert pool.get(MODEL, 1).gate == "passed"
    asyncio.run(pool.stop(1))
