"""PyTorch twin of the MergeVQ tokenizer train step (benchmarking only: `make bench BENCH=torch`).

The same function as trainer/src/tokenizer (docs/model.md §2) and bench/trainStep.ts, written functionally
over a dict of named parameters so that the weights exported by bench/torch.bench.ts load one to one:

    loss = MSE(x, recon) + 0.1·(H_sample − H_codebook) + 0.25·commitment,   Adam β (0.5, 0.9), eps 1e-8

CNN encoder → transformer with token merging (ToMe bipartite matching, size-weighted merge, proportional
attention) → GN–SiLU–1×1 head → LFQ (sign, straight-through, exact factorised entropy) → unmerge by the
tracked groups → decoder (DWConv position term, MixMLP blocks, AdaGN-conditioned CNN up-path).
Maps are NCHW here (PyTorch's native layout); the TS model is NHWC, so weights and gradients are permuted
at the file boundary only (see `to_torch` / `from_torch`).

    python twin.py check DIR [float32|float64]   loss and gradients of one batch → DIR/torch-grads-<dtype>.bin
    python twin.py serve DIR      one train step per "step" line on stdin, its seconds as a JSON line on stdout
    python twin.py profile DIR    torch.profiler table of one train step
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

# ───────────────────────────── exchange format ─────────────────────────────
# DIR/manifest.json: {"config": {...}, "tensors": [{"name", "shape", "offset"}...]} (offsets in float32
# elements into DIR/tensors.bin, little-endian float32, TS layouts). Written by bench/torch.bench.ts.


def load_dir(d: str):
    with open(os.path.join(d, "manifest.json")) as f:
        man = json.load(f)
    flat = np.fromfile(os.path.join(d, "tensors.bin"), dtype="<f4")
    tensors = {}
    for t in man["tensors"]:
        n = math.prod(t["shape"])
        tensors[t["name"]] = torch.from_numpy(flat[t["offset"] : t["offset"] + n].copy()).reshape(t["shape"])
    return man["config"], tensors


def to_torch(name: str, t: torch.Tensor) -> torch.Tensor:
    """TS layout → PyTorch layout: conv [kh, kw, Cin, Cout] → [Cout, Cin, kh, kw]; linear [Cin, Cout] → [Cout, Cin]."""
    if t.dim() == 4 and t.shape[0] == 1 and t.shape[1] == 1:  # 1×1 conv used as a linear layer
        return t.reshape(t.shape[2], t.shape[3]).t().contiguous()
    if t.dim() == 4 and t.shape[3] == 1 and ("pos_conv" in name or "dwconv" in name):  # depthwise [3, 3, C, 1]
        return t.permute(2, 3, 0, 1).contiguous()  # → [C, 1, 3, 3]
    if t.dim() == 4:
        return t.permute(3, 2, 0, 1).contiguous()
    if t.dim() == 2:
        return t.t().contiguous()
    return t.clone()


def from_torch(name: str, t: torch.Tensor, ts_shape: list[int]) -> torch.Tensor:
    """Inverse of to_torch (for gradients)."""
    if len(ts_shape) == 4 and ts_shape[0] == 1 and ts_shape[1] == 1:
        return t.t().reshape(ts_shape)
    if len(ts_shape) == 4 and ts_shape[3] == 1 and ("pos_conv" in name or "dwconv" in name):
        return t.permute(2, 3, 0, 1).reshape(ts_shape)
    if len(ts_shape) == 4:
        return t.permute(2, 3, 1, 0)
    if len(ts_shape) == 2:
        return t.t()
    return t.reshape(ts_shape)


# ───────────────────────────── layers ─────────────────────────────


def gn(P, name, x, groups=32, eps=1e-6):
    return F.group_norm(x, groups, P[f"{name}.weight"], P[f"{name}.bias"], eps)


def ln(P, name, x, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), P[f"{name}.weight"], P[f"{name}.bias"], eps)


def linear(P, name, x, bias=True):
    return F.linear(x, P[f"{name}.weight"], P[f"{name}.bias"] if bias else None)


def conv3x3(P, name, x, stride=1, bias=True):
    return F.conv2d(x, P[f"{name}.weight"], P[f"{name}.bias"] if bias else None, stride=stride, padding=1)


def dwconv3x3(P, name, x):
    return F.conv2d(x, P[f"{name}.weight"], P[f"{name}.bias"], padding=1, groups=x.shape[1])


def res_block(P, name, x):
    """Conv(SiLU(GN(x))) → Conv(SiLU(GN(h))) + shortcut (1×1, no bias, when widths differ). [B, C, H, W]."""
    h = conv3x3(P, f"{name}.conv1", F.silu(gn(P, f"{name}.norm1", x)), bias=False)
    h = conv3x3(P, f"{name}.conv2", F.silu(gn(P, f"{name}.norm2", h)), bias=False)
    if f"{name}.nin_shortcut.weight" in P:
        x = F.conv2d(x, P[f"{name}.nin_shortcut.weight"][:, :, None, None])
    return h + x


def depth_to_space2(x):
    """DCR depth-to-space ×2 (TF order, not pixel_shuffle): out[c, 2h+i, 2w+j] = in[(2i+j)·C + c, h, w]."""
    B, C4, H, W = x.shape
    C = C4 // 4
    return x.view(B, 2, 2, C, H, W).permute(0, 3, 4, 1, 5, 2).reshape(B, C, 2 * H, 2 * W)


def attention(P, name, x, heads, log_sizes=None):
    """timm layout (qkv = [q | k | v]); ToMe's +log(size) over keys. x [B, N, D] → (out [B, N, D], keys [B, h, N, d])."""
    B, N, D = x.shape
    qkv = linear(P, f"{name}.qkv", x).view(B, N, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    mask = None if log_sizes is None else log_sizes[:, None, None, :]
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return linear(P, f"{name}.proj", o.transpose(1, 2).reshape(B, N, D)), k


def mlp(P, name, x):
    return linear(P, f"{name}.fc2", F.gelu(linear(P, f"{name}.fc1", x)))


def mix_mlp(P, name, x, side):
    """fc1 → √N×√N grid → depthwise 3×3 → flatten → GELU → fc2."""
    B, N, _ = x.shape
    h = linear(P, f"{name}.fc1", x)
    C = h.shape[2]
    g = dwconv3x3(P, f"{name}.dwconv", h.transpose(1, 2).reshape(B, C, side, side))
    return linear(P, f"{name}.fc2", F.gelu(g.flatten(2).transpose(1, 2)))


# ───────────────────────────── token merging (ToMe) ─────────────────────────────


def cap_r(r, t):
    return max(0, min(r, (t - 1) // 2))


def bipartite_merge(x, keys, sizes, groups, r):
    """
    One ToMe merge with a protected CLS at position 0. A = even positions, B = odd; the r A-tokens with the
    best cosine match merge into their B partner (size-weighted); new order [unmerged A ascending, all B].
    x [B, t, D], keys [B, h, t, d], sizes [B, t], groups [B, n0] (position of each original token).
    """
    B, t, D = x.shape
    with torch.no_grad():
        m = keys.mean(1)
        m = m / m.norm(dim=-1, keepdim=True)
        a, b = m[:, ::2], m[:, 1::2]
        scores = a @ b.transpose(1, 2)  # [B, ⌈t/2⌉, ⌊t/2⌋]
        scores[:, 0, :] = -math.inf
        best, dst = scores.max(dim=-1)
        order = best.argsort(dim=-1, descending=True, stable=True)
        src_idx = order[:, :r]
        unm_idx = order[:, r:].sort(dim=-1).values
        nA, nB = a.shape[1], b.shape[1]
        new_pos = torch.empty(B, t, dtype=torch.long)
        ar = torch.arange(nA - r).expand(B, -1)
        new_pos.scatter_(1, unm_idx * 2, ar)
        new_pos.scatter_(1, src_idx * 2, nA - r + dst.gather(1, src_idx))
        new_pos[:, 1::2] = nA - r + torch.arange(nB)
        new_sizes = torch.zeros(B, t - r).scatter_add_(1, new_pos, sizes)
        groups = new_pos.gather(1, groups)
    idx = new_pos[:, :, None].expand(-1, -1, D)
    merged = torch.zeros(B, t - r, D, dtype=x.dtype).scatter_add(1, idx, x * sizes[:, :, None])
    return merged / new_sizes[:, :, None], new_sizes, groups


# ───────────────────────────── LFQ ─────────────────────────────


def bit_matrix(d, start, count):
    codes = torch.arange(start, start + count)
    return ((codes[None, :] >> torch.arange(d)[:, None]) & 1).to(torch.get_default_dtype())  # [d, count]


class CodebookEntropy(torch.autograd.Function):
    """H(p̄) = −Σ_i p̄_i log(p̄_i + 1e-5) with p_n(i) = Π_c σ(a_nc·c_c(i)), streamed over code chunks (both passes)."""

    @staticmethod
    def forward(ctx, a):
        N, d = a.shape
        total = 2**d
        C = 1
        while C < total and C * 2 * N <= 1 << 22:
            C *= 2
        v = -F.softplus(a).sum(1, keepdim=True)  # Σ_c log σ(−a_nc)
        pbar = torch.cat([torch.exp(a @ bit_matrix(d, s, C) + v).mean(0) for s in range(0, total, C)])
        ctx.save_for_backward(a, v, pbar)
        ctx.C = C
        return -(pbar * torch.log(pbar + 1e-5)).sum()

    @staticmethod
    def backward(ctx, dy):
        a, v, pbar = ctx.saved_tensors
        N, d = a.shape
        C = ctx.C
        pe = pbar + 1e-5
        g = -(torch.log(pe) + pbar / pe)
        acc = torch.zeros(N, d)
        rows = torch.zeros(N, 1)
        for s in range(0, 2**d, C):
            bits = bit_matrix(d, s, C)
            W = torch.exp(a @ bits + v) * g[s : s + C]
            acc += W @ bits.t()
            rows += W.sum(1, keepdim=True)
        return (acc - torch.sigmoid(a) * rows) / N * dy


def lfq(z, tau):
    """z [B, K, d] → (zq straight-through ±1, entropy = H_sample − H_codebook, commitment)."""
    q = torch.where(z > 0, 1.0, -1.0).detach()
    zq = z + (q - z).detach()
    commitment = ((z - q) ** 2).mean()
    a = z.reshape(-1, z.shape[-1]) * (4 / tau)
    p = torch.sigmoid(a)
    h_sample = (p * F.softplus(-a) + (1 - p) * F.softplus(a)).sum(1).mean()
    return zq, h_sample - CodebookEntropy.apply(a), commitment


# ───────────────────────────── model ─────────────────────────────


def encoder_cnn(P, cfg, x):
    n = len(cfg["widths"])
    h = conv3x3(P, "encoder.conv_in", x, bias=False)
    for l in range(n):
        for i in range(cfg["numResBlocks"]):
            h = res_block(P, f"encoder.down.{l}.block.{i}", h)
        if l < n - 1:
            h = conv3x3(P, f"encoder.down.{l}.downsample", h, stride=2)
    return h


def encode(P, cfg, x):
    """x [B, 3, H, W] → (zq [B, K, zc], groups [B, L] kept-token index per raster position, entropy, commitment)."""
    f = encoder_cnn(P, cfg, x)
    B, D = f.shape[:2]
    tokens = f.flatten(2).transpose(1, 2)  # [B, L, D] raster
    L = tokens.shape[1]
    h = torch.cat([P["encoder.cls_token"].expand(B, -1, -1), tokens], 1)
    sizes = torch.ones(B, 1 + L)
    groups = torch.arange(1 + L).expand(B, -1).clone()
    merged = False
    for i, r in enumerate(cfg["r"]):
        n = f"encoder.blocks.{i}"
        t = h.shape[1]
        out, keys = attention(P, f"{n}.attn", ln(P, f"{n}.norm1", h), cfg["heads"], sizes.log() if merged else None)
        h = h + P[f"{n}.ls1.gamma"] * out
        rl = cap_r(r, t)
        if rl > 0:
            h, sizes, groups = bipartite_merge(h, keys, sizes, groups, rl)
            merged = True
        h = h + P[f"{n}.ls2.gamma"] * mlp(P, f"{n}.mlp", ln(P, f"{n}.norm2", h))
    tok = h[:, 1:]  # [B, K, D]
    K = tok.shape[1]
    g = F.silu(gn(P, "encoder.norm_out", tok.transpose(1, 2)))  # GN over the K tokens: [B, D, K]
    z = linear(P, "encoder.quant_conv", g.transpose(1, 2))  # [B, K, zc]
    zq, entropy, commitment = lfq(z, cfg["entropyTemperature"])
    return zq, groups[:, 1:] - 1, entropy, commitment, K


def decoder(P, cfg, zmap):
    """zmap [B, zc, S, S] → recon [B, 3, H, W]."""
    B, zc, S, _ = zmap.shape
    widths = cfg["widths"]
    flat = zmap.flatten(2)  # AdaGN conditioning: per-channel μ and σ = √(unbiased var + 1e-6), not detached
    mu = flat.mean(2)
    sigma = torch.sqrt(((flat - mu[:, :, None]) ** 2).sum(2) / max(S * S - 1, 1) + 1e-6)
    h = conv3x3(P, "decoder.conv_in", zmap)
    h = h + dwconv3x3(P, "decoder.pos_conv", h)
    D = h.shape[1]
    x = h.flatten(2).transpose(1, 2)
    for i in range(cfg["numDecBlocks"]):
        n = f"decoder.blocks.{i}"
        x = x + P[f"{n}.ls1.gamma"] * attention(P, f"{n}.attn", ln(P, f"{n}.norm1", x), cfg["decHeads"])[0]
        x = x + P[f"{n}.ls2.gamma"] * mix_mlp(P, f"{n}.mlp", ln(P, f"{n}.norm2", x), S)
    h = x.transpose(1, 2).reshape(B, D, S, S)
    for l in range(len(widths) - 1, -1, -1):
        a = f"decoder.up.{l}.adanorm"
        scale = linear(P, f"{a}.gamma_fc", sigma)[:, :, None, None]
        shift = linear(P, f"{a}.beta_fc", mu)[:, :, None, None]
        h = F.group_norm(h, 32, eps=1e-6) * scale + shift
        for i in range(cfg["numResBlocks"] + (cfg["numResExtra"] if l >= 1 else 0)):
            h = res_block(P, f"decoder.up.{l}.block.{i}", h)
        if l > 0:
            h = depth_to_space2(conv3x3(P, f"decoder.up.{l}.upsample", h))
    return conv3x3(P, "decoder.conv_out", F.silu(gn(P, "decoder.norm_out", h)))


def train_loss(P, cfg, x):
    zq, groups, entropy, commitment, K = encode(P, cfg, x)
    B, L = groups.shape
    S = math.isqrt(L)
    full = zq.gather(1, groups[:, :, None].expand(-1, -1, zq.shape[2])) if K != L else zq  # unmerge: [B, L, zc]
    recon = decoder(P, cfg, full.transpose(1, 2).reshape(B, -1, S, S))
    return F.mse_loss(recon, x) + 0.1 * entropy + 0.25 * commitment


# ───────────────────────────── commands ─────────────────────────────


def setup(d, dtype=torch.float32):
    cfg, tensors = load_dir(d)
    torch.set_num_threads(int(cfg["threads"]))
    torch.set_default_dtype(dtype)
    names = cfg["params"]
    P = {n: to_torch(n, tensors[n]).to(dtype).requires_grad_(True) for n in names}
    x = tensors["x"].permute(0, 3, 1, 2).contiguous().to(dtype)  # NHWC → NCHW
    return cfg, tensors, names, P, x


def check(d, dtype_name="float32"):
    """Loss and gradients at float32 (the benchmarked step) or float64 (the reference both sides are held to)."""
    cfg, tensors, names, P, x = setup(d, getattr(torch, dtype_name))
    loss = train_loss(P, cfg, x)
    grads = torch.autograd.grad(loss, [P[n] for n in names], allow_unused=True)
    out, index = [], []
    for n, g in zip(names, grads):
        if g is None:
            continue
        ts = from_torch(n, g, list(tensors[n].shape)).contiguous().numpy().astype("<f4")
        index.append({"name": n, "size": int(ts.size)})
        out.append(ts.reshape(-1))
    np.concatenate(out).tofile(os.path.join(d, f"torch-grads-{dtype_name}.bin"))
    print(json.dumps({"loss": loss.item(), "grads": index, "torch": torch.__version__, "threads": torch.get_num_threads()}))


def serve(d):
    cfg, _, names, P, x = setup(d)
    params = [P[n] for n in names]
    opt = torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.9), eps=1e-8)
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = train_loss(P, cfg, x)
        loss.backward()
        opt.step()
        v = loss.item()
        print(json.dumps({"s": time.perf_counter() - t0, "loss": v}), flush=True)


def profile(d):
    """Per-operator CPU profile of one train step after warm-up (torch.profiler, self time; SHAPES=1 per shape)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cfg, _, names, P, x = setup(d)
    opt = torch.optim.Adam([P[n] for n in names], lr=2e-4, betas=(0.5, 0.9), eps=1e-8)

    def step():
        opt.zero_grad(set_to_none=True)
        train_loss(P, cfg, x).backward()
        opt.step()

    for _ in range(3):
        step()
    shapes = os.environ.get("SHAPES") == "1"  # group by input shapes, like profile.ts SHAPES=1
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=shapes) as prof:
        step()
    table = prof.key_averages(group_by_input_shape=shapes)
    print(table.table(sort_by="self_cpu_time_total", row_limit=int(os.environ.get("TOP", "40"))))


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("check", "serve", "profile"):
        sys.exit("usage: twin.py check DIR [float32|float64] | serve DIR | profile DIR")
    torch.manual_seed(0)
    if sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "float32")
    else:
        {"serve": serve, "profile": profile}[sys.argv[1]](sys.argv[2])
