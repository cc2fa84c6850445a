"""Building blocks of FasterViT: position biases, window attention, windowing helpers.

Module and buffer names follow the official release so its state dicts load with
``strict=True``. The position biases are produced by small MLPs over relative
coordinates; in eval mode the result is cached in the (official) ``relative_bias``
buffer and recomputed only when the MLP weights or the buffer change (in-place EMA
updates and ``load_state_dict`` bump tensor version counters, which we track).

Two paths through every module with an eval shortcut (the bias cache here, BatchNorm folding in
blocks.py): the plain path computes everything from the parameters and is what training,
TorchScript (``torch.jit.script``), torch.fx symbolic tracing and torch.compile see; the eager
eval path (cache / folded weights) lives in ``@torch.jit.unused`` methods, entered only when
:func:`eager_eval` says so. Shape-dependent Python control flow (padding to the window, the
token grid of another length, the CPU/accelerator attention dispatch) sits in small functions
that ``torch.fx.wrap`` makes graph leaves, so a traced graph keeps it at run time.
"""

import contextlib
import math
from typing import Optional, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _has_autocast(device_type: str) -> bool:
    """Whether autocast exists for this device type (cpu, cuda, mps, xpu, ...; not the meta device that
    `fvt models` counts on)."""
    return torch.amp.is_autocast_available(device_type)


def eager_eval(module: nn.Module, x) -> bool:
    """Whether ``module`` may take its eval shortcut for input ``x``: eval mode, a real tensor (not a
    torch.fx Proxy: a traced graph must compute from the parameters instead of baking today's values
    in as constants) and not under torch.compile (dynamo compiles the plain path). Called only from
    ``@torch.jit.unused`` methods: TorchScript cannot type a module argument."""
    return not module.training and not isinstance(x, torch.fx.Proxy) and not _compiling()


class EagerEvalModule(nn.Module):
    """A module with an eager-only eval shortcut. ``forward`` takes it with
    ``if not torch.jit.is_scripting() and self._eager_eval(x): ...`` (TorchScript compiles the
    method as a stub that is never reached, since ``is_scripting()`` is true there)."""

    @torch.jit.unused
    def _eager_eval(self, x: torch.Tensor) -> bool:
        return eager_eval(self, x)


class _CachedBias(EagerEvalModule):
    """Base class: ``forward()`` computes the bias from the MLP; ``cached()`` (eager eval only) returns
    it from ``self.relative_bias`` (a persistent buffer, part of the official state dict)."""

    def __init__(self) -> None:
        super().__init__()
        self._cache_key = None

    def compute(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _key(self):
        params = tuple(p._version for p in self.cpb_mlp.parameters())
        b = self.relative_bias
        return params + (b._version, b.device, b.data_ptr())

    def train(self, mode: bool = True):
        self._cache_key = None
        return super().train(mode)

    def forward(self) -> torch.Tensor:
        return self.compute()

    @torch.jit.unused
    def cached(self) -> torch.Tensor:
        if self.training or _compiling():
            return self.compute()
        if self._cache_key is None or self._cache_key != self._key():
            dev = self.relative_bias.device.type
            # the cache is computed without autocast: float32 whatever autocast is active around this call
            amp_off = torch.autocast(dev, enabled=False) if _has_autocast(dev) else contextlib.nullcontext()
            with torch.no_grad(), amp_off:
                bias = self.compute()  # in the parameters' dtype: float32 (float64 for a float64 model)
            if bias.shape == self.relative_bias.shape:
                self.relative_bias.copy_(bias)
            else:  # input-dependent length (rank-1 embeddings on odd inputs): do not cache
                return bias
            self._cache_key = self._key()
        return self.relative_bias


class WindowPosBias(_CachedBias):
    """Continuous relative-position bias (log-spaced coordinates -> MLP -> 16*sigmoid),
    laid out as a (1, heads, seq, seq) attention mask. Carrier tokens, when present,
    occupy the first ``seq - window**2`` rows/columns and get zero bias."""

    def __init__(self, window_size: int, num_heads: int, seq_length: int) -> None:
        super().__init__()
        w = window_size
        self.window_size = w
        self.num_heads = num_heads
        self.seq_length = seq_length
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512, bias=True), nn.ReLU(inplace=True),
                                     nn.Linear(512, num_heads, bias=False))
        rel = torch.arange(-(w - 1), w, dtype=torch.float32)
        table = torch.stack(torch.meshgrid(rel, rel, indexing="ij"), dim=-1).unsqueeze(0)
        table = table / max(w - 1, 1)  # a 1x1 window has only offset 0 (avoid 0/0)
        table = torch.sign(table) * torch.log2(table.abs() * 8 + 1.0) / math.log2(8)
        self.register_buffer("relative_coords_table", table)
        pos = torch.arange(w)
        coords = torch.stack(torch.meshgrid(pos, pos, indexing="ij")).flatten(1)  # 2, w*w
        rel_idx = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (w - 1)
        self.register_buffer("relative_position_index", rel_idx[..., 0] * (2 * w - 1) + rel_idx[..., 1])
        self.register_buffer("relative_bias", torch.zeros(1, num_heads, seq_length, seq_length))

    def compute(self) -> torch.Tensor:
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        n = self.window_size * self.window_size  # (an int in TorchScript too; ** gives a float)
        bias = table[self.relative_position_index].permute(2, 0, 1)  # (heads, n, n)
        bias = 16 * torch.sigmoid(bias)
        extra = self.seq_length - n
        if extra > 0:
            bias = F.pad(bias, (extra, 0, extra, 0))
        return bias.unsqueeze(0)


class TokenPosEmbed(_CachedBias):
    """Absolute position embedding of a square token grid: MLP over coordinates in [-1, 1)
    added to the tokens. ``seq_length`` is the number of tokens it is built for."""

    def __init__(self, dim: int, seq_length: int) -> None:
        super().__init__()
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512, bias=True), nn.ReLU(),
                                     nn.Linear(512, dim, bias=False))
        self.seq_length = seq_length
        self.register_buffer("relative_bias", torch.zeros(1, seq_length, dim))
        self.register_buffer("grid", token_grid(seq_length), persistent=False)

    def compute(self, seq_length: Optional[int] = None) -> torch.Tensor:
        grid = self.grid if seq_length in (None, self.seq_length) else token_grid(seq_length, self.grid.device)
        return self.cpb_mlp(grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and self._eager_eval(x):
            return self._forward_cached(x)
        return x + self.cpb_mlp(grid_for(x, self.grid))

    @torch.jit.unused
    def _forward_cached(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.seq_length:
            return x + self.compute(x.shape[1])
        emb = self.cached()
        dev = x.device.type
        if not self.training and _has_autocast(dev) and torch.is_autocast_enabled(dev):
            # The cache is float32, but under autocast the MLP (training, the official code) yields
            # the autocast dtype: adding float32 would promote the whole token stream of the stage to
            # float32 and cost every following op a wider pass (docs/speed.md, eval dtype flow).
            emb = emb.to(torch.get_autocast_dtype(dev))
        return x + emb


def token_grid(seq_length: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Coordinates in [-1, 1) of a square grid of ``seq_length`` tokens, (1, seq_length, 2)."""
    side = int(seq_length ** 0.5)
    pos = torch.arange(side, dtype=torch.float32, device=device)
    half = max(side // 2, 1)  # a single token sits at 0 (avoid 0/0)
    grid = torch.stack(torch.meshgrid(pos, pos, indexing="ij")).flatten(1)  # 2, side*side
    return ((grid - side // 2) / half).t().unsqueeze(0)


def grid_for(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The stored grid, or one for the token count of ``x`` when that differs (odd inputs)."""
    if x.shape[1] == grid.shape[1]:
        return grid
    return token_grid(x.shape[1], grid.device)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """Attention with an additive bias: :func:`attention_math` on CPU, the fused kernel elsewhere."""
    if q.device.type == "cpu":
        return attention_math(q, k, v, bias, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout_p)


def attention_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                   dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v with explicit matmuls. Used on CPU: for window-sized
    sequences (16-64 tokens) PyTorch's CPU flash kernel is slower, in bfloat16 2-2.5x slower
    forward and 4-25x slower backward (docs/speed.md). The softmax runs in float32 (the
    scores are promoted to at least float32), so it is at least as exact as the fused kernel."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    acc = torch.promote_types(bias.dtype, torch.float32)  # float32, or float64 for a float64 model
    attn = (scores.to(acc) + bias).softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    return attn.to(v.dtype) @ v


class WindowAttention(EagerEvalModule):
    """Multi-head self-attention over a token sequence with a learned position bias,
    computed with ``F.scaled_dot_product_attention`` (bias passed as ``attn_mask``) on
    accelerators and with :func:`attention_math` on CPU."""

    def __init__(self, dim: int, num_heads: int, window_size: int, seq_length: int,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.pos_emb_funct = WindowPosBias(window_size, num_heads, seq_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if not torch.jit.is_scripting() and self._eager_eval(x):
            bias = self.pos_emb_funct.cached()
        else:
            bias = self.pos_emb_funct()
        p = self.attn_drop if self.training else 0.0
        x = attend(q, k, v, bias, p)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


# -- windowing -------------------------------------------------------------------------
def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * H/w * W/w, w*w, C), windows in row-major order."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // w, w, W // w, w).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, w * w, C)


def window_reverse(x: torch.Tensor, w: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    C = x.shape[-1]
    B = x.shape[0] // ((H // w) * (W // w))
    x = x.reshape(B, H // w, W // w, w, w, C).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, C, H, W)


def carrier_to_grid(ct: torch.Tensor, sh: int, sw: int, c: int) -> torch.Tensor:
    """Carrier tokens grouped per window (B, sh*sw*c*c, C) -> raster order of the
    (sh*c, sw*c) carrier grid."""
    B, _, C = ct.shape
    return ct.reshape(B, sh, sw, c, c, C).permute(0, 1, 3, 2, 4, 5).reshape(B, -1, C)


def grid_to_carrier(ct: torch.Tensor, sh: int, sw: int, c: int) -> torch.Tensor:
    """Raster carrier grid -> per-window groups (B, windows, c*c, C).

    The reference implementation reads the raster grid back as (sw*c, sh*c); for square
    grids that is the exact inverse of :func:`carrier_to_grid`, for non-square ones it
    reorders windows. We keep the reference layout so official weights behave the same."""
    B, _, C = ct.shape
    return ct.reshape(B, sw, c, sh, c, C).permute(0, 1, 3, 2, 4, 5).reshape(B, sh * sw, c * c, C)


def pad_to_multiple(x: torch.Tensor, w: int) -> torch.Tensor:
    """Zero-pad the bottom/right of (B, C, H, W) up to multiples of ``w`` (a no-op when they are)."""
    pad_b, pad_r = (w - x.shape[2] % w) % w, (w - x.shape[3] % w) % w
    if pad_b > 0 or pad_r > 0:
        x = F.pad(x, (0, pad_r, 0, pad_b))
    return x


def crop_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: the top-left (h, w) of (B, C, H, W)."""
    if x.shape[2] != h or x.shape[3] != w:
        x = x[:, :, :h, :w].contiguous()
    return x


# graph leaves for torch.fx (they branch on run-time shapes / the device); faster_vit.py wraps the
# padding helpers it calls the same way
torch.fx.wrap("attend")
torch.fx.wrap("grid_for")


# -- eval-time conv + BatchNorm folding ----------------------------------------------------
def fold_conv_bn(weight: torch.Tensor, bias: Optional[torch.Tensor], bn_weight: Optional[torch.Tensor],
                 bn_bias: Optional[torch.Tensor], mean: Optional[torch.Tensor], var: Optional[torch.Tensor],
                 eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a conv with the eval-mode BatchNorm that follows it folded in. The one
    definition of the arithmetic: eager (cached), TorchScript and torch.fx graphs compute the same bits."""
    assert bn_weight is not None and bn_bias is not None and mean is not None and var is not None
    scale = bn_weight / torch.sqrt(var + eps)
    b = bias if bias is not None else torch.zeros_like(mean)
    return weight * scale.view(-1, 1, 1, 1), (b - mean) * scale + bn_bias


class FoldCache:
    """Folded conv weights, recomputed when any source tensor changes (version counters / storage),
    like the position-bias cache. Eager mode only."""

    def __init__(self) -> None:
        self.key = None
        self.value = None

    def get(self, modules: list, fold) -> list:
        """``fold()`` (computed without autograd or autocast), cached while ``modules``' tensors are unchanged."""
        tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        key = tuple((t._version, t.data_ptr(), t.dtype) for t in tensors)
        if key != self.key:
            dev = tensors[0].device.type
            amp_off = torch.autocast(dev, enabled=False) if _has_autocast(dev) else contextlib.nullcontext()
            with torch.no_grad(), amp_off:
                self.value = fold()
            self.key = key
        return self.value
