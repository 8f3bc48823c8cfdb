"""Export a model for deployment: ONNX or TorchScript, images (B, 3, H, W) in, L2-normalised
float32 embeddings (B, D) out."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from upreid.models.checkpoints import LoadedModel, load_model

FORMATS = ("onnx", "torchscript")


class EmbeddingModel(nn.Module):
    """The test embedding of a loaded model, L2-normalised: what retrieval compares."""

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__()
        self.model = loaded.model.eval()
        self.output = loaded.output

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.output(self.model(x)).float(), dim=1)


def export(checkpoint: str | Path, out: str | Path, fmt: str) -> Path:
    """Write ``checkpoint``'s embedding model to ``out`` as ``fmt`` (onnx with a dynamic batch
    axis, or torchscript); returns ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid are {list(FORMATS)}")
    loaded = load_model(checkpoint)
    model = EmbeddingModel(loaded).eval()
    example = torch.randn(2, 3, loaded.height, loaded.width)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad():
        if fmt == "torchscript":
            torch.jit.trace(model, example).save(str(tmp))
        else:
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                input_names=["images"],
                output_names=["embeddings"],
                dynamo=False,
                dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
            )
    tmp.replace(out)
    return out
