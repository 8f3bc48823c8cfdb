"""MGN, multiple granularity network (Wang et al. 2018): one global and two part branches."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from upreid.models.backbone import FEATURE_DIMS, build_backbone, set_last_stride
from upreid.models.heads import Reduction, ReIDOutput, make_classifier


class MGN(nn.Module):
    """Shared trunk up to layer3, then one copy of layer4 per branch.

    Branch ``b`` cuts its map into ``stripes[b]`` horizontal parts; it yields one max-pooled global
    vector plus (if ``stripes[b] > 1``) one max-pooled vector per stripe: 1 + 3 + 4 = 8 vectors,
    each reduced to ``reduced_dim`` with its own classifier. Triplet on the 3 reduced globals; the
    test feature is the concatenation ``(B, 8 * reduced_dim)``.

    ``self.backbone`` holds the loadable weights; its ``layer4`` is only a template (frozen,
    unused in forward) that :meth:`init_branches` copies into the branches after loading.
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        stripes: tuple[int, ...] = (1, 2, 3),
        reduced_dim: int = 256,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(arch, last_stride=2)
        self.stripes = stripes
        # the global branch keeps stride 2, part branches use stride 1 for taller maps
        self.strides = tuple(2 if n == 1 else 1 for n in stripes)
        self.branches = nn.ModuleList()
        self.init_branches()
        num_feats = sum(1 + (n if n > 1 else 0) for n in stripes)
        in_dim = FEATURE_DIMS[arch]
        self.reductions = nn.ModuleList(Reduction(in_dim, reduced_dim) for _ in range(num_feats))
        self.classifiers = nn.ModuleList(
            make_classifier(reduced_dim, num_classes) for _ in range(num_feats)
        )
        self.embedding_dim = num_feats * reduced_dim

    def init_branches(self) -> None:
        """Copy ``backbone.layer4`` into every branch; call after loading backbone weights.

        The first call builds the branches; later calls copy weights in place, so parameters
        already handed to an optimizer stay the same objects.
        """
        if len(self.branches) == 0:
            for stride in self.strides:
                layer4 = copy.deepcopy(self.backbone.layer4).requires_grad_(True)
                set_last_stride(layer4, stride)
                self.branches.append(layer4)
        else:
            for branch in self.branches:
                branch.load_state_dict(self.backbone.layer4.state_dict())
        self.backbone.layer4.requires_grad_(False)  # template only; keeps DDP free of unused grads

    def shared(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, C3, H/16, W/16)``: the trunk up to layer3."""
        b = self.backbone
        return b.layer3(b.layer2(b.layer1(b.stem(x))))

    def pooled(self, x: Tensor) -> list[Tensor]:
        """The 8 max-pooled vectors, each ``(B, C)``, in branch order (global first per branch)."""
        base = self.shared(x)
        out: list[Tensor] = []
        for branch, n in zip(self.branches, self.stripes):
            fmap = branch(base)  # (B, C, h, w)
            out.append(fmap.amax(dim=(2, 3)))
            if n > 1:
                parts = nn.functional.adaptive_max_pool2d(fmap, (n, 1)).flatten(2)  # (B, C, n)
                out.extend(parts.unbind(dim=2))
        return out

    def global_indices(self) -> list[int]:
        """Positions of each branch's global vector in :meth:`pooled`'s list."""
        idx, pos = [], 0
        for n in self.stripes:
            idx.append(pos)
            pos += 1 + (n if n > 1 else 0)
        return idx

    def forward(self, x: Tensor) -> ReIDOutput:
        feats = [red(v) for red, v in zip(self.reductions, self.pooled(x))]  # 8 x (B, r)
        logits = [fc(f) for fc, f in zip(self.classifiers, feats)]
        triplet = [feats[i] for i in self.global_indices()]
        return ReIDOutput(logits=logits, triplet=triplet, embedding=torch.cat(feats, dim=1))
