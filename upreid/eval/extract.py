"""Batched feature extraction with an embedder (any ``(B, 3, H, W) -> (B, D)`` callable)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from upreid.data.dataset import ImageDataset, collate
from upreid.data.images import ImageCache
from upreid.data.records import Record
from upreid.data.transforms import test_transform
from upreid.progress import Progress

Embedder = Callable[[Tensor], Tensor]


@torch.no_grad()
def embed_batch(embed: Embedder, images: Tensor, flip: bool = False) -> Tensor:
    """L2-normalised float32 features (B, D) of normalised images (B, 3, H, W), on the device
    where ``embed`` computes them.

    With ``flip`` the features of the image and of its horizontal mirror are summed (i.e.
    averaged) *before* the normalisation.
    """
    feats = embed(images)
    if flip:
        feats = feats + embed(images.flip(3))
    return F.normalize(feats.float(), dim=1)


def extract_features(
    embed: Embedder,
    records: Sequence[Record],
    height: int,
    width: int,
    batch_size: int = 128,
    flip: bool = False,
    workers: int = 0,
    desc: str = "extract",
    cache: ImageCache | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Features (N, D) float32 L2-normalised, pids (N,) and camids (N,) of ``records``, in order.

    The embedder runs under ``torch.no_grad()`` on CPU batches; moving them to its device is the
    embedder's job (:meth:`upreid.runtime.Runtime.embedder`), and the features stay there.
    Unreadable images must be removed beforehand (``drop_bad_records``): ``ImageDataset`` would
    substitute another image, so a substitution raises here. Images come from ``cache`` when one
    is given.
    """
    dataset = ImageDataset(records, test_transform(height, width), cache)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
    )
    progress = Progress(len(dataset), desc, unit="img", every=10.0)
    feats, pids, camids = [], [], []
    expected = 0
    for images, pid, camid, index in loader:
        wanted = torch.arange(expected, expected + len(index))
        if not torch.equal(index, wanted):
            raise RuntimeError(
                f"{desc}: unreadable image(s) among records {wanted.tolist()}; "
                "filter them with drop_bad_records first"
            )
        expected += len(index)
        feats.append(embed_batch(embed, images, flip))
        pids.append(pid)
        camids.append(camid)
        progress.update(len(index))
    if not feats:
        raise ValueError(f"{desc}: no images to extract features from")
    return torch.cat(feats), torch.cat(pids), torch.cat(camids)
