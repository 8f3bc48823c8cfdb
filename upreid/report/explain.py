"""Feature-response maps (Appendix E, Figure 8): the channel-summed last-stage activation of a
model's ResNet trunk, upsampled and laid over the image, side by side for several models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from upreid.data.images import read_image  # noqa: E402
from upreid.data.transforms import MEAN, STD, test_transform  # noqa: E402
from upreid.models.backbone import ResNetTrunk  # noqa: E402


def find_trunk(model: nn.Module) -> ResNetTrunk:
    """The (first) ResNet trunk inside ``model``."""
    for module in model.modules():
        if isinstance(module, ResNetTrunk):
            return module
    raise ValueError(f"{type(model).__name__} holds no ResNet trunk")


@torch.no_grad()
def activation_map(trunk: ResNetTrunk, image: torch.Tensor) -> torch.Tensor:
    """``[H, W]`` in [0, 1]: the last stage's activations summed over channels (``image`` is a
    normalised ``[3, H, W]`` tensor), bilinearly upsampled to the image size."""
    trunk.eval()
    device = next(trunk.parameters()).device
    fmap = trunk(image.unsqueeze(0).to(device)).float().cpu()  # [1, C, h, w]
    heat = fmap.sum(dim=1, keepdim=True)
    heat = F.interpolate(heat, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    heat = heat - heat.min()
    return heat / heat.max().clamp_min(1e-12)


def _denormalise(image: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def explain_png(
    models: Mapping[str, tuple[ResNetTrunk, int, int]],
    images: Sequence[str | Path],
    out_png: str | Path,
) -> Path:
    """One row per image: the image, then each model's response map over it."""
    images = list(images)
    if not images:
        raise ValueError("explain: no images given")
    cols = 1 + len(models)
    fig, axes = plt.subplots(
        len(images), cols, figsize=(1.6 * cols, 3.0 * len(images)), squeeze=False
    )
    for row, path in zip(axes, images, strict=True):
        pil = read_image(str(path))
        for ax in row:
            ax.axis("off")
        first = next(iter(models.values()))
        row[0].imshow(_denormalise(test_transform(first[1], first[2])(pil)))
        row[0].set_title("image", fontsize=8)
        for ax, (name, (trunk, height, width)) in zip(row[1:], models.items(), strict=True):
            tensor = test_transform(height, width)(pil)
            ax.imshow(_denormalise(tensor))
            ax.imshow(activation_map(trunk, tensor).numpy(), cmap="jet", alpha=0.5)
            ax.set_title(name, fontsize=8)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
