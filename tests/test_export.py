"""Exported models embed images exactly as the PyTorch model does (onnxruntime, TorchScript)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from upreid.cli import app
from upreid.export import EmbeddingModel
from upreid.models.checkpoints import load_model


@pytest.fixture
def checkpoint(bot_checkpoint: Path) -> Path:
    return bot_checkpoint


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_embeddings_match_pytorch(fmt: str, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / f"model.{fmt}"
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "--format", fmt, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    x = torch.randn(5, 3, 32, 16)  # another batch size than the export example
    with torch.no_grad():
        want = EmbeddingModel(load_model(checkpoint))(x).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(["embeddings"], {"images": x.numpy()})[0]
    else:
        got = torch.jit.load(str(out))(x).detach().numpy()
    assert got.shape == (5, 512)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
