"""Sparse k-reciprocal encoding (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), shared by evaluation re-ranking and SpCL's pseudo-labels.

Over N items (queries then gallery for re-ranking, the target set for SpCL):

1. :func:`nearest`: the M nearest neighbours of every item (M = 3 (k1 + 1), of which the first
   K are ranked) with their distances, from blocks of rows of the (N, N) distance, never the
   whole matrix; ties break by index, as a stable argsort does.
2. :func:`expanded_sets`: the k-reciprocal sets R(i, k1) = {j among the k1 + 1 nearest of i with
   i among the k1 + 1 nearest of j}, plus every R(c, round(k1 / 2)), c in R(i, k1), that shares
   more than two thirds of its members with R(i, k1): R*(i) (paper Eq. 4-5).
3. :func:`encoding`: V[i, j] = exp(-d(i, j)) over j in R*(i), each row summing to one (Eq. 7),
   then the local query expansion V[i] <- mean of the rows of the k2 nearest of i (Eq. 11).
   Sparse (N, N); the distances of R* pairs are read from step 1 (the rare others computed).
4. :func:`jaccard_blocks`: d_J(i, j) = 1 - s / (2 - s), s = sum_l min(V[i, l], V[j, l]) (Eq. 10),
   only for the rows and columns asked for, a block of rows at a time.

Two variants. :data:`REFERENCE` is the widely used re-ranking code (torchreid,
reid-strong-baseline): the input distances squared and divided by each item's maximum over all N
items, the k1 + 1 nearest. :data:`SPCL` is SpCL's ``compute_jaccard_distance``: distances
2 - 2 cos, item i forced first, the k1 nearest, negative distances clipped to zero.

Distances come from a :class:`DistanceSource`: :class:`FeatureSource` computes them from
L2-normalised features with matrix products and top-k on a torch device (CUDA or CPU), in blocks;
:class:`MatrixSource` reads them from dense query / gallery matrices. The sparse bookkeeping
(steps 2-4) runs on the CPU with NumPy / SciPy. At MSMT17 scale (11,659 x 82,161, 2048-d) the
re-ranked evaluation took 225 s at a peak RSS of 6.3 GiB on 2 CPU threads (bench_eval.py --msmt).

Neighbour search: blocked torch matrix products and top-k, not faiss. faiss-cpu 1.15.1 installs
from PyPI; measured on this project's benchmark CPU (Intel Xeon with AVX-512 and AMX, 2 threads),
the 22 nearest of 2,800 items among 30,000 2048-d features take 1.33-1.36 s with faiss
``IndexFlatIP`` and 1.41 s with the torch block used here (matrix product, row maximum, top-64,
exact ordering with ties by index; the product alone is 1.2 s). faiss is not faster per pass,
and the re-ranking would need a second faiss search for each item's maximum distance plus the
dense (Q, G) product, which the torch block yields in the same pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

DeviceLike = torch.device | str

BLOCK_ELEMENTS = 1 << 26  # key entries per block of rows in the neighbour search (256 MB)
CANDIDATES = 3  # neighbours kept per item, times k1 + 1, whose distances the encoding reuses
PAIR_ELEMENTS = 1 << 21  # feature entries gathered at a time for the remaining pair distances
EXPAND_ROWS = 8192  # rows per block of the R* expansion
DENSE_ELEMENTS = 1 << 24  # Jaccard entries per block of rows (float64: 128 MB)
WORK_ELEMENTS = 1 << 22  # min(V[i, l], V[j, l]) terms per Jaccard block


@dataclass(frozen=True)
class Variant:
    """How raw distances rank and weight neighbours.

    square: use raw ** 2 (reference) instead of raw (SpCL).
    normalise: divide each item's distances by their maximum over all N items (reference).
    self_first: item i is its own nearest neighbour whatever the ties (SpCL).
    wide: rank the max(k1 + 1, k2) nearest (reference) instead of the k1 nearest (SpCL).
    """

    square: bool
    normalise: bool
    self_first: bool
    wide: bool

    def width(self, k1: int, k2: int, num: int) -> int:
        """How many nearest neighbours of each of ``num`` items are ranked."""
        return min(num, max(k1 + 1, k2) if self.wide else k1)


REFERENCE = Variant(square=True, normalise=True, self_first=False, wide=True)
SPCL = Variant(square=False, normalise=False, self_first=True, wide=False)


class DistanceSource(Protocol):
    """Distances between ``size`` items: blocks of rows of sort keys (smaller is nearer) that a
    monotone map turns into raw distances, and single pairs."""

    size: int
    device: torch.device

    def rows(self, start: int, stop: int, out: Tensor) -> Tensor:
        """(stop - start, size) keys of items start..stop-1 to every item, on ``device``;
        may be written into ``out``, a float32 tensor of that shape."""
        ...

    def to_distance(self, keys: Tensor) -> Tensor:
        """Raw distances of keys (any shape), non-decreasing in the key; may work in place."""
        ...

    def pairs(self, i: np.ndarray, j: np.ndarray) -> Tensor:
        """(P,) CPU raw distances d(i[p], j[p]) for int64 index arrays i, j (P,)."""
        ...


class FeatureSource:
    """Distances ``transform(f_i . f_j)`` of L2-normalised features, computed on ``device``.

    features: (N, D), moved to the device as float32. ``transform`` maps similarities to
    distances, non-increasing, and may work in place. Keys are the negated similarities.
    """

    def __init__(
        self, features: Tensor, transform: Callable[[Tensor], Tensor], device: DeviceLike = "cpu"
    ) -> None:
        self.features = features.detach().to(device=device, dtype=torch.float32)
        self.transform = transform
        self.size = int(features.shape[0])
        self.device = self.features.device

    def rows(self, start: int, stop: int, out: Tensor) -> Tensor:
        """(B, N) keys -f_i . f_j, one matrix product into ``out``."""
        return torch.mm(self.features[start:stop].neg(), self.features.T, out=out)

    def to_distance(self, keys: Tensor) -> Tensor:
        """transform(-keys), in place where the transform is."""
        return self.transform(keys.neg_())

    def pairs(self, i: np.ndarray, j: np.ndarray) -> Tensor:
        """(P,) distances on the CPU, gathering ``PAIR_ELEMENTS`` feature entries at a time."""
        step = max(1, PAIR_ELEMENTS // max(1, self.features.shape[1]))
        out = torch.empty(i.size, dtype=torch.float32)
        for lo in range(0, i.size, step):
            a = torch.from_numpy(i[lo : lo + step]).to(self.device)
            b = torch.from_numpy(j[lo : lo + step]).to(self.device)
            dot = torch.linalg.vecdot(self.features[a], self.features[b])
            out[lo : lo + step] = self.transform(dot).cpu()
        return out


class MatrixSource:
    """Raw distances from dense q_g (Q, G), q_q (Q, Q) and g_g (G, G) matrices, read as the
    reference does: item i's distances are column i of [[q_q, q_g], [q_g^T, g_g]]. The keys
    are the distances themselves, in the matrices' dtype."""

    def __init__(self, q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray) -> None:
        self.q_g, self.q_q, self.g_g = (np.asarray(x) for x in (q_g, q_q, g_g))
        self.num_q = self.q_g.shape[0]
        self.size = self.num_q + self.q_g.shape[1]
        self.device = torch.device("cpu")

    def rows(self, start: int, stop: int, out: Tensor) -> Tensor:
        """(B, N) CPU distances (a new tensor: ``out`` is not used)."""
        q = self.num_q
        cq, cg = slice(min(start, q), min(stop, q)), slice(max(start, q) - q, max(stop, q) - q)
        upper = np.concatenate([self.q_q[:, cq], self.q_g[:, cg]], axis=1)  # (Q, B)
        lower = np.concatenate([self.q_g[cq].T, self.g_g[:, cg]], axis=1)  # (G, B)
        return torch.from_numpy(np.ascontiguousarray(np.concatenate([upper, lower]).T))

    def to_distance(self, keys: Tensor) -> Tensor:
        """The keys are the distances."""
        return keys

    def pairs(self, i: np.ndarray, j: np.ndarray) -> Tensor:
        """(P,) CPU distances: entry (j, i) of the joint matrix."""
        q = self.num_q
        out = np.empty(i.size, dtype=np.result_type(self.q_g, self.q_q, self.g_g))
        top, left = j < q, i < q
        for mask, mat, r, c in (
            (top & left, self.q_q, j, i),
            (top & ~left, self.q_g, j, i - q),
            (~top & left, self.q_g, i, j - q),
            (~top & ~left, self.g_g, j - q, i - q),
        ):
            out[mask] = mat[r[mask], c[mask]]
        return torch.from_numpy(out)


@dataclass(frozen=True)
class Neighbours:
    """The M nearest of every item, nearest first with ties by index (item i first for a
    self-first variant): index (N, M) int64, dist (N, M) float32 the variant's (normalised)
    distances to them, scale (N,) float32 each item's divisor (its maximum, or ones)."""

    index: np.ndarray
    dist: np.ndarray
    scale: np.ndarray


def _distance(raw: Tensor, variant: Variant) -> Tensor:
    """Raw distances -> the variant's float32 distances, before any normalisation (in place)."""
    return (raw.square_() if variant.square else raw).float()


def variant_distance(raw: Tensor, variant: Variant, scale: Tensor) -> Tensor:
    """Raw distances (B, ...) -> the variant's float32 distances, divided by ``scale`` (B,)
    when it normalises (the reference's fl(fl(raw ** 2) / max)); in place where possible."""
    dist = _distance(raw, variant)
    if variant.normalise:
        dist.div_(scale.view(-1, *([1] * (dist.dim() - 1))))
    return dist


def _sort_ties_by_index(order: Tensor, idx: Tensor, dist: Tensor) -> tuple[Tensor, ...]:
    """Rows of (order, idx, dist) (B, M) sorted by order, ties by idx."""
    idx, perm = idx.sort(dim=1)
    order, perm2 = order.gather(1, perm).sort(dim=1, stable=True)
    perm = perm.gather(1, perm2)
    return order, idx.gather(1, perm2), dist.gather(1, perm)


def _block_neighbours(
    source: DistanceSource, keys: Tensor, start: int, m: int, variant: Variant, scale: Tensor
) -> tuple[Tensor, Tensor]:
    """Indices and distances (B, m) of the m nearest of items start..start+B-1 from their keys
    (B, N): top-k of the keys, exact ordering of the variant's distances with ties by index
    (a tie across the m-th place sorts that whole row). Modifies ``keys`` when self-first."""
    num_b, num = keys.shape
    diag = (
        torch.arange(num_b, device=keys.device),
        torch.arange(start, start + num_b, device=keys.device),
    )
    if variant.self_first:
        self_dist = variant_distance(source.to_distance(keys[diag].clone()), variant, scale)
        keys[diag] = -torch.inf
    vals, idx = torch.topk(keys, min(m + 1, num), dim=1, largest=False)
    dist = variant_distance(source.to_distance(vals), variant, scale)
    if variant.self_first:
        dist[:, 0] = self_dist  # the -inf key came first
    order = dist.clone()
    if variant.self_first:
        order[:, 0] = -torch.inf
    order, idx, dist = _sort_ties_by_index(order, idx, dist)
    if order.shape[1] > m:
        tied = (order[:, m - 1] == order[:, m]).nonzero().squeeze(1)
        if tied.numel():
            full = variant_distance(source.to_distance(keys[tied]), variant, scale[tied])
            if variant.self_first:
                full[torch.arange(tied.numel()), start + tied] = -torch.inf
            idx[tied, :m] = torch.sort(full, dim=1, stable=True).indices[:, :m]
            dist[tied, :m] = full.gather(1, idx[tied, :m])
            if variant.self_first:
                dist[tied, 0] = self_dist[tied]
    return idx[:, :m], dist[:, :m]


def nearest(
    source: DistanceSource,
    m: int,
    variant: Variant,
    on_block: Callable[[int, Tensor, Tensor], None] | None = None,
) -> Neighbours:
    """The m nearest neighbours of every item, a block of ``BLOCK_ELEMENTS`` keys at a time.

    ``on_block(start, keys, scale)`` then sees each block's keys (B, N) of items
    start..start+B-1 and their divisors (B,), on the source's device, and may overwrite them.
    """
    num = source.size
    step = max(1, min(num, BLOCK_ELEMENTS // num))
    buffer = torch.empty((step, num), dtype=torch.float32, device=source.device)
    index = np.empty((num, m), dtype=np.int64)
    dist = np.empty((num, m), dtype=np.float32)
    scale = np.ones(num, dtype=np.float32)
    for start in range(0, num, step):
        stop = min(start + step, num)
        keys = source.rows(start, stop, buffer[: stop - start])
        top = torch.ones(stop - start, device=keys.device)
        if variant.normalise:  # the reference's column maximum: the matrix is symmetric
            top = _distance(source.to_distance(keys.amax(dim=1)), variant)
            scale[start:stop] = top.cpu().numpy()
        idx, near = _block_neighbours(source, keys, start, m, variant, top)
        index[start:stop], dist[start:stop] = idx.cpu().numpy(), near.cpu().numpy()
        if on_block is not None:
            on_block(start, keys, top)
    return Neighbours(index, dist, scale)


def reciprocal(rank: np.ndarray, k: int) -> sp.csr_matrix:
    """R(i, k) as an (N, N) 0/1 float32 matrix, symmetric: j among the k + 1 nearest of i and i
    among the k + 1 nearest of j (at most the rank.shape[1] nearest). rank: (N, K)."""
    num = rank.shape[0]
    top = rank[:, : k + 1]
    rows = np.repeat(np.arange(num), top.shape[1])
    forward = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, top.ravel())), (num, num))
    mutual = sp.csr_matrix(forward.multiply(forward.T))
    mutual.eliminate_zeros()
    mutual.sort_indices()
    return mutual


def expanded_sets(rank: np.ndarray, k1: int) -> sp.csr_matrix:
    """R*(i): R(i, k1) plus each R(c, round(k1 / 2)), c in R(i, k1), with more than two thirds
    of its members in R(i, k1). rank: (N, K) -> (N, N) CSR pattern, sorted indices."""
    full = reciprocal(rank, k1)
    half = reciprocal(rank, int(np.around(k1 / 2.0)))
    limit = 2.0 / 3 * np.diff(half.indptr)  # (N,): the reference's 2/3 * |R(c, k1/2)|
    parts = []
    for lo in range(0, rank.shape[0], EXPAND_ROWS):
        block = full[lo : lo + EXPAND_ROWS]
        overlap = block.multiply(block @ half).tocoo()  # |R(i, k1) & R(c, k1/2)|, c in R(i, k1)
        keep = overlap.data > limit[overlap.col]
        accept = sp.csr_matrix(
            (overlap.data[keep], (overlap.row[keep], overlap.col[keep])), block.shape
        )
        parts.append(block + accept @ half)  # positive exactly on R*(i)
    support = sp.csr_matrix(sp.vstack(parts, format="csr"))
    support.sort_indices()
    return support


def query_expand(v: sp.csr_matrix, rank: np.ndarray, k2: int) -> sp.csr_matrix:
    """Local query expansion: row i of v (N, N) becomes the mean of the rows of its k2 nearest
    (at most rank.shape[1]). rank: (N, K) -> (N, N) CSR."""
    num = rank.shape[0]
    top = rank[:, :k2]
    width = top.shape[1]
    mean = sp.csr_matrix(
        (np.full(top.size, 1.0 / width), top.ravel(), np.arange(0, top.size + 1, width)),
        shape=(num, num),
    )
    out = sp.csr_matrix(mean @ v)
    out.sort_indices()
    return out


def _pair_distances(
    source: DistanceSource, nb: Neighbours, rows: np.ndarray, cols: np.ndarray, variant: Variant
) -> Tensor:
    """The variant's distances (P,) float32 of pairs (rows, cols) sorted by row, then column:
    looked up among the neighbours' distances, the others computed by the source."""
    num, m = nb.index.shape
    order = np.argsort(nb.index, axis=1, kind="stable")
    known = (np.arange(num)[:, None] * num + np.take_along_axis(nb.index, order, 1)).ravel()
    wanted = rows * num + cols
    pos = np.minimum(np.searchsorted(known, wanted), known.size - 1)
    found = known[pos] == wanted
    out = torch.from_numpy(np.take_along_axis(nb.dist, order, 1).ravel()[pos])
    miss = np.flatnonzero(~found)
    if miss.size:
        raw = source.pairs(rows[miss], cols[miss])
        scale = torch.from_numpy(nb.scale[rows[miss]])
        out[torch.from_numpy(miss)] = variant_distance(raw, variant, scale)
    return out


def encoding(
    source: DistanceSource, nb: Neighbours, k1: int, k2: int, width: int, variant: Variant
) -> sp.csr_matrix:
    """The k-reciprocal encoding V (N, N) float64 CSR, rows summing to one: Gaussian weights
    exp(-d(i, j)) over R*(i), then the local query expansion over k2 neighbours (k2 = 1: none),
    ranks taken from the first ``width`` neighbours."""
    rank = nb.index[:, :width]
    support = expanded_sets(rank, k1)
    num = source.size
    rows = np.repeat(np.arange(num), np.diff(support.indptr))
    cols = support.indices.astype(np.int64)
    weight = torch.exp(-_pair_distances(source, nb, rows, cols, variant)).double().numpy()
    weight /= np.bincount(rows, weights=weight, minlength=num)[rows]
    v = sp.csr_matrix((weight, cols, support.indptr), shape=(num, num))
    return v if k2 == 1 else query_expand(v, rank, k2)


def _min_overlap(block: sp.csr_matrix, inv: sp.csr_matrix) -> np.ndarray:
    """s[b, j] = sum_l min(block[b, l], inv[l, j]): block (B, N), inv (N, C) -> float64 (B, C).

    Every non-zero (b, l) of the block meets the non-zeros of row l of inv; the products of the
    two sparsity patterns are laid out flat and summed with one bincount.
    """
    num_b, width = block.shape[0], inv.shape[1]
    row = np.repeat(np.arange(num_b, dtype=np.int64), np.diff(block.indptr))
    col = block.indices
    count = np.diff(inv.indptr)[col]  # (nnz,) terms each non-zero adds
    first = np.cumsum(count) - count
    offset = np.repeat(inv.indptr[col] - first, count) + np.arange(int(count.sum()))
    contrib = np.minimum(np.repeat(block.data, count), inv.data[offset])
    flat = np.repeat(row * width, count) + inv.indices[offset]
    return np.bincount(flat, weights=contrib, minlength=num_b * width).reshape(num_b, width)


def jaccard_blocks(v: sp.csr_matrix, rows: range, cols: range) -> Iterator[tuple[int, np.ndarray]]:
    """Jaccard distances 1 - s / (2 - s) of the items ``rows`` to the items ``cols``.

    v: (N, N) CSR encoding, rows summing to one. Yields (offset within ``rows``, (B, C) float32)
    blocks of at most ``DENSE_ELEMENTS`` entries and about ``WORK_ELEMENTS`` min terms.
    """
    inv = sp.csr_matrix(v[cols.start : cols.stop].T)  # (N, C): entries (j, V[j, l]) of column l
    sub = v[rows.start : rows.stop]  # (R, N)
    terms = np.concatenate([[0], np.cumsum(np.diff(inv.indptr)[sub.indices])])
    work = terms[sub.indptr]  # (R + 1,) cumulative min terms at row boundaries
    max_rows = max(1, DENSE_ELEMENTS // max(1, len(cols)))
    start = 0
    while start < len(rows):
        fits = int(np.searchsorted(work, work[start] + WORK_ELEMENTS, side="right")) - 1
        stop = max(start + 1, min(start + max_rows, len(rows), fits))
        s = _min_overlap(sub[start:stop], inv)
        union = 2.0 - s
        np.divide(s, union, out=s)
        yield start, np.subtract(1.0, s, out=s).astype(np.float32)
        start = stop


def check_k(k1: int, k2: int) -> None:
    """Raise ValueError unless both neighbourhood sizes are positive."""
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")


def _widths(k1: int, k2: int, num: int, variant: Variant) -> tuple[int, int]:
    """(ranked neighbours, neighbours kept with their distances) per item."""
    check_k(k1, k2)
    width = variant.width(k1, k2, num)
    return width, min(num, max(width, CANDIDATES * (k1 + 1)))


@torch.no_grad()
def re_rank(
    source: DistanceSource, num_q: int, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> np.ndarray:
    """Re-ranked query-gallery distances of the reference variant (paper Eq. 12).

    The source's items are num_q queries then the gallery. Returns float32 (Q, G)
    ``(1 - lambda) * d_Jaccard + lambda * d``, d the squared input distance divided by each
    query's maximum over all N items. The output is the only (Q, G) array allocated.
    """
    num = source.size
    width, keep = _widths(k1, k2, num, REFERENCE)
    out = np.empty((num_q, num - num_q), dtype=np.float32)

    def original(start: int, keys: Tensor, scale: Tensor) -> None:
        stop = min(start + keys.shape[0], num_q)
        if start < stop:
            raw = source.to_distance(keys[: stop - start, num_q:])
            dist = variant_distance(raw, REFERENCE, scale[: stop - start])
            out[start:stop] = dist.mul_(lambda_value).cpu().numpy()

    nb = nearest(source, keep, REFERENCE, original)
    v = encoding(source, nb, k1, k2, width, REFERENCE)
    for start, jac in jaccard_blocks(v, range(num_q), range(num_q, num)):
        jac *= 1.0 - lambda_value
        out[start : start + len(jac)] += jac
    return out


@torch.no_grad()
def jaccard(source: DistanceSource, k1: int, k2: int, variant: Variant = SPCL) -> np.ndarray:
    """(N, N) float32 Jaccard distances of all items to all items, clipped at zero."""
    num = source.size
    width, keep = _widths(k1, k2, num, variant)
    nb = nearest(source, keep, variant)
    v = encoding(source, nb, k1, k2, width, variant)
    out = np.empty((num, num), dtype=np.float32)
    for start, jac in jaccard_blocks(v, range(num), range(num)):
        out[start : start + len(jac)] = jac
    return np.clip(out, 0.0, None, out=out)
