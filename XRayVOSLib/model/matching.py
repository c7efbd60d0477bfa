"""Memory readout: STCN's global affinity and the local-matching affinity with reference points.

Shapes: B batch, N memory frames, Ck key channels, h x w the matching grid (P = h*w query positions,
M = h*w positions per memory frame), C value channels (objects x value_dim, flattened).

Local matching (Xi, Ma, Zhuang 2026): for each query position and each memory frame, the reference point is
the arg-max similarity position; attention is restricted to the k x k window around it. Windows are index
lists into the raw stored key/value maps, built at read time: no k^2-expanded copy of the memory exists.
The window is shifted to stay inside the map (not zero-padded), so a window as large as the map covers it
exactly once and local == global.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from XRayVOSLib.settings import RunSettings


def l2_similarity(mem_keys: torch.Tensor, query_key: torch.Tensor) -> torch.Tensor:
    """Negative squared L2 distance (up to a per-query constant), scaled by 1/sqrt(Ck), as in STCN.

    mem_keys: B, N, Ck, h, w;  query_key: B, Ck, P (or B, Ck, h, w)  ->  B, P, N, M
    One batched matmul over all memory frames: on CPU this layout is several times faster than einsum.
    """
    b, n, ck = mem_keys.shape[:3]
    mk = mem_keys.transpose(1, 2).reshape(b, ck, -1)  # B, Ck, N*M
    scale = 1 / math.sqrt(ck)
    # -|q - k|^2 = 2 q.k - |k|^2 - |q|^2; |q|^2 is constant per query row and cancels in the softmax.
    # The scales go on the small operands and |k|^2 is subtracted in place: a baddbmm with a broadcast
    # bias and a division of the B x P x N*M result took 19 ms instead of 11 ms on the 2-core CPU
    # (P = 1024, N*M = 6144, one-off micro-benchmark; the whole-run `xrayvos bench` is too noisy to show it).
    qk = query_key.flatten(2).transpose(1, 2) * (2 * scale)  # B, P, Ck
    k_sq = mk.pow(2).sum(dim=1, keepdim=True) * scale  # B, 1, N*M
    sim = torch.bmm(qk, mk).sub_(k_sq)
    return sim.view(b, qk.shape[1], n, -1)


def window_indices(reference: torch.Tensor, height: int, width: int, window: int) -> torch.Tensor:
    """Flat indices of the window around each reference point, shifted to lie inside the map.

    reference: (...,) flat positions in [0, h*w)  ->  (..., kh*kw) with kh = min(window, h), kw = min(window, w)
    """
    kh, kw = min(window, height), min(window, width)
    ry = torch.div(reference, width, rounding_mode="floor")
    rx = reference - ry * width
    y0 = (ry - kh // 2).clamp(0, height - kh)
    x0 = (rx - kw // 2).clamp(0, width - kw)
    dy = torch.arange(kh, device=reference.device)
    dx = torch.arange(kw, device=reference.device)
    rows = (y0.unsqueeze(-1) + dy).unsqueeze(-1)  # ..., kh, 1
    cols = (x0.unsqueeze(-1) + dx).unsqueeze(-2)  # ..., 1, kw
    return (rows * width + cols).flatten(-2)


def gather_windows(feature_map: torch.Tensor, reference: torch.Tensor, window: int) -> torch.Tensor:
    """Gather C-channel windows around reference points from a raw map (used for tests and the losses).

    feature_map: C, h, w;  reference: P  ->  C, P, kh*kw
    """
    c, h, w = feature_map.shape
    idx = window_indices(reference, h, w, window)  # P, kk
    return feature_map.flatten(1)[:, idx]


def global_affinity(similarity: torch.Tensor) -> torch.Tensor:
    """B, P, N, M -> softmax weights B, P, N*M over every memory position."""
    return torch.softmax(similarity.flatten(2).float(), dim=-1)


def reference_points(similarity: torch.Tensor) -> torch.Tensor:
    """Arg-max memory position per query and memory frame: B, P, N, M -> B, P, N (first maximum on ties).

    On CPU without autograd, numpy's SIMD arg-max over the contiguous last axis does it in 1.5 ms where
    torch's takes 7 ms (B=1, P=1024, N=6, M=1024; one-off micro-benchmark, torch 2.13, numpy 2).
    """
    if similarity.device.type == "cpu" and not similarity.requires_grad and similarity.dtype == torch.float32:
        return torch.from_numpy(similarity.contiguous().numpy().argmax(axis=-1))
    return similarity.argmax(dim=-1)


def local_affinity(similarity: torch.Tensor, height: int, width: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference point per memory frame, then softmax over the k x k windows of all memory frames.

    similarity: B, P, N, M  ->  (weights B, P, L; indices B, P, L into the N*M memory positions)
    with L = N * kh * kw.
    """
    b, p, n, m = similarity.shape
    reference = reference_points(similarity)  # B, P, N: the reference point in each memory frame
    idx = window_indices(reference, height, width, window)  # B, P, N, kk
    logits = similarity.gather(-1, idx).flatten(2).float()  # B, P, N*kk
    offsets = (torch.arange(n, device=idx.device) * m).view(1, 1, n, 1)
    idx = (idx + offsets).flatten(2)
    return torch.softmax(logits, dim=-1), idx


def value_rows(mem_values: torch.Tensor) -> torch.Tensor:
    """B, N, K, Cv, h, w -> B, N*M, K*Cv: one row per memory position, the layout every readout path reads.

    The inference memory bank caches it, so the copy is made once per memory change, not per frame.
    """
    b, n, k_obj, cv, h, w = mem_values.shape
    return mem_values.permute(0, 1, 4, 5, 2, 3).reshape(b, n * h * w, k_obj * cv)


def sparse_readout(rows: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor | None) -> torch.Tensor:
    """Weighted sum of memory values.  rows: B, N*M, C;  weights: B, P, L  ->  B, P, C.

    indices None means dense weights over all N*M positions (global). With indices, small problems (and
    anything needing gradients) scatter into a dense matrix; large CPU inference problems use
    embedding_bag (a weighted gather-sum of each query's L rows), whose cost is P*L*C instead of
    P*N*M*C. It replaced a CSR sparse matmul that was 2-4x slower on CPU (torch 2.13, `xrayvos bench`).
    """
    if indices is None:
        return torch.bmm(weights.to(rows.dtype), rows)
    b, p, _ = weights.shape
    total = rows.shape[1]
    out = []
    use_sparse = not torch.is_grad_enabled() and p * total > 4 * 1024 * 1024 and rows.device.type == "cpu"
    for i in range(b):
        if use_sparse:
            out.append(F.embedding_bag(indices[i], rows[i].contiguous(), per_sample_weights=weights[i].to(rows.dtype),
                                       mode="sum"))
        else:
            dense = rows.new_zeros(p, total).scatter_(1, indices[i], weights[i].to(rows.dtype))
            out.append(dense @ rows[i])
    return torch.stack(out)


def memory_readout(
    query_key: torch.Tensor,
    mem_keys: torch.Tensor,
    mem_values: torch.Tensor,
    matching: str = RunSettings.method,
    window: int = RunSettings.window,
    *,
    query_chunk: int = 2048,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Read memory for every query position.

    query_key: B, Ck, h, w;  mem_keys: B, N, Ck, h, w;  mem_values: B, N, K, Cv, h, w  ->  B, K, Cv, h, w
    rows: value_rows(mem_values) when the caller already has it (the inference memory bank caches it).
    Query positions are processed in chunks so the B x N x P x M similarity never has to exist whole.
    """
    b, ck, h, w = query_key.shape
    k_obj, cv = mem_values.shape[2:4]
    rows = value_rows(mem_values) if rows is None else rows  # B, N*M, K*Cv
    q = query_key.flatten(2)
    chunks = []
    for start in range(0, h * w, query_chunk):
        q_chunk = q[:, :, start : start + query_chunk]
        sim = l2_similarity(mem_keys, q_chunk)  # B, p, N, M
        if matching == "global":
            weights, idx = global_affinity(sim), None
        elif matching == "local":
            weights, idx = local_affinity(sim, h, w, window)
        else:
            raise ValueError(f"unknown matching {matching!r}; use 'local' or 'global'")
        chunks.append(sparse_readout(rows, weights, idx))
    readout = torch.cat(chunks, dim=1)  # B, P, K*Cv
    return readout.transpose(1, 2).reshape(b, k_obj, cv, h, w)
