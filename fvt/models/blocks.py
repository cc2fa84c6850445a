"""FasterViT's blocks: the stem, the downsampling, convolutional blocks, hierarchical-attention
(HAT) blocks and the carrier-token initializer. Module names follow the official release.

Inference (eval mode, no autograd) folds each BatchNorm into its conv: eager mode caches the folded
weights (an ``@torch.jit.unused`` path); TorchScript, torch.fx graphs and torch.compile fold them
from the parameters on every call, with the same arithmetic (see layers.py).
"""

from typing import Optional, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d

from .layers import (EagerEvalModule, FoldCache, Mlp, TokenPosEmbed, WindowAttention, carrier_to_grid, fold_conv_bn,
                     grid_to_carrier)

# a graph leaf for torch.fx: it reads BatchNorm buffers, which fx would otherwise turn into constants
torch.fx.wrap("fold_conv_bn")


class PatchEmbed(EagerEvalModule):
    """Two stride-2 3x3 convs (stride 4 overall)."""

    def __init__(self, in_chans: int, in_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Identity()
        self.conv_down = nn.Sequential(
            nn.Conv2d(in_chans, in_dim, 3, 2, 1, bias=False), nn.BatchNorm2d(in_dim, eps=1e-4), nn.ReLU(),
            nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False), nn.BatchNorm2d(dim, eps=1e-4), nn.ReLU())
        self._fold = FoldCache()
        self.bn_eps = (self.conv_down[1].eps, self.conv_down[4].eps)  # (TorchScript cannot read them from outside)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv_down
        if self.training or c[1].training or torch.is_grad_enabled():
            return c(x)
        # inference: each BatchNorm folded into its conv (two convolutions instead of four ops)
        if not torch.jit.is_scripting() and self._eager_eval(x):
            w1, b1, w2, b2 = self._cached_folds()
        else:
            w1, b1, w2, b2 = self._folds()
        x = F.relu(F.conv2d(x, w1, b1, 2, 1))
        return F.relu(F.conv2d(x, w2, b2, 2, 1))

    def _folds(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c0, n0, c1, n1 = self.conv_down[0], self.conv_down[1], self.conv_down[3], self.conv_down[4]
        w1, b1 = fold_conv_bn(c0.weight, c0.bias, n0.weight, n0.bias, n0.running_mean, n0.running_var, self.bn_eps[0])
        w2, b2 = fold_conv_bn(c1.weight, c1.bias, n1.weight, n1.bias, n1.running_mean, n1.running_var, self.bn_eps[1])
        return w1, b1, w2, b2

    @torch.jit.unused
    def _cached_folds(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._fold.get(list(self.conv_down), self._folds)


class Downsample(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.reduction = nn.Sequential(nn.Conv2d(dim, 2 * dim, 3, 2, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(x))


class ConvBlock(EagerEvalModule):
    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale: Optional[float] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm1 = nn.BatchNorm2d(dim, eps=1e-5)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm2 = nn.BatchNorm2d(dim, eps=1e-5)
        self.bn_eps = (self.norm1.eps, self.norm2.eps)  # (TorchScript cannot read them from outside the BN)
        if layer_scale is not None:
            self.gamma = nn.Parameter(layer_scale * torch.ones(dim))
        else:
            self.register_parameter("gamma", None)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self._fold = FoldCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.norm1.training or torch.is_grad_enabled():
            y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        else:  # inference: BatchNorm folded into the convs
            if not torch.jit.is_scripting() and self._eager_eval(x):
                w1, b1, w2, b2 = self._cached_folds()
            else:
                w1, b1, w2, b2 = self._folds()
            y = F.conv2d(self.act1(F.conv2d(x, w1, b1, 1, 1)), w2, b2, 1, 1)
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)

    def _folds(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c1, n1, c2, n2 = self.conv1, self.norm1, self.conv2, self.norm2
        w1, b1 = fold_conv_bn(c1.weight, c1.bias, n1.weight, n1.bias, n1.running_mean, n1.running_var, self.bn_eps[0])
        w2, b2 = fold_conv_bn(c2.weight, c2.bias, n2.weight, n2.bias, n2.running_mean, n2.running_var, self.bn_eps[1])
        return w1, b1, w2, b2

    @torch.jit.unused
    def _cached_folds(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._fold.get([self.conv1, self.norm1, self.conv2, self.norm2], self._folds)


def _scale(gamma: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return x if gamma is None else gamma * x


class HATBlock(nn.Module):
    """Window attention over local tokens plus their carrier tokens; the carrier tokens
    first attend to each other globally (hierarchical attention). Without carrier tokens
    (``sr == (1, 1)``) this is plain window attention."""

    __constants__ = ["do_hat", "square", "last", "do_propagation"]  # TorchScript compiles only the live branches

    def __init__(self, dim: int, num_heads: int, window_size: int, sr: tuple, ct_size: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, layer_scale: Optional[float] = None, last: bool = False,
                 do_propagation: bool = False) -> None:
        super().__init__()
        self.window_size, self.ct_size, self.sr = window_size, ct_size, tuple(sr)
        self.do_hat = sr[0] > 1 or sr[1] > 1
        self.square = sr[0] == sr[1]
        ct_per_window = ct_size ** 2 if self.do_hat else 0
        ct_total = ct_per_window * sr[0] * sr[1]
        hidden = int(dim * mlp_ratio)
        self.pos_embed = TokenPosEmbed(dim, window_size ** 2)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, window_size ** 2 + ct_per_window,
                                    qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden, drop)
        ls = (lambda: nn.Parameter(layer_scale * torch.ones(dim))) if layer_scale is not None else None
        for name in ("gamma3", "gamma4"):
            self.register_parameter(name, ls() if ls else None)
        if self.do_hat:
            self.hat_norm1 = nn.LayerNorm(dim)
            self.hat_norm2 = nn.LayerNorm(dim)
            self.hat_attn = WindowAttention(dim, num_heads, int(ct_total ** 0.5), ct_total, qkv_bias, attn_drop, drop)
            self.hat_mlp = Mlp(dim, hidden, drop)
            self.hat_drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
            if self.square:  # the reference has no carrier-grid embedding for non-square grids
                self.hat_pos_embed = TokenPosEmbed(dim, ct_total)
            for name in ("gamma1", "gamma2"):
                self.register_parameter(name, ls() if ls else None)
        self.last = last
        self.do_propagation = do_propagation

    def forward(self, x: torch.Tensor, ct: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        x = self.pos_embed(x)
        if self.do_hat:
            assert ct is not None, "a HAT block needs the carrier tokens"
            return self._forward_hat(x, ct)
        return self._local(x), ct

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(_scale(self.gamma3, self.attn(self.norm1(x))))
        return x + self.drop_path(_scale(self.gamma4, self.mlp(self.norm2(x))))

    def _forward_hat(self, x: torch.Tensor, ct: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        Bw, T, C = x.shape
        B = ct.shape[0]
        sh, sw, c = self.sr[0], self.sr[1], self.ct_size
        ct = carrier_to_grid(ct, sh, sw, c)
        if self.square:
            ct = self.hat_pos_embed(ct)
        ct = ct + self.hat_drop_path(_scale(self.gamma1, self.hat_attn(self.hat_norm1(ct))))
        ct = ct + self.hat_drop_path(_scale(self.gamma2, self.hat_mlp(self.hat_norm2(ct))))
        ct = grid_to_carrier(ct, sh, sw, c).reshape(Bw, c * c, C)
        x = self._local(torch.cat((ct, x), dim=1))
        ctr, x = x.split([c * c, T], dim=1)
        ct = ctr.reshape(B, -1, C)
        if self.last and self.do_propagation:  # push carrier information into the image
            img = ctr.transpose(1, 2).reshape(Bw, C, c, c).float()
            up = F.interpolate(img, size=(self.window_size, self.window_size), mode="nearest")
            x = x + _scale(self.gamma1, up.flatten(2).transpose(1, 2).to(x.dtype))
        return x, ct


class TokenInitializer(nn.Module):
    """Carrier tokens: depthwise conv then average pooling to (ct*sr_h, ct*sr_w), grouped per window."""

    def __init__(self, dim: int, padded: tuple, window_size: int, ct_size: int) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        kernel, stride = [], []
        for n in padded:
            out = int(ct_size * n / window_size)
            s = int(n / out)
            kernel.append(n - (out - 1) * s)
            stride.append(s)
        # the same conv is registered twice, as in the reference state dict
        self.to_global_feature = nn.Sequential()
        self.to_global_feature.add_module("pos", self.pos_embed)
        self.to_global_feature.add_module("pool", nn.AvgPool2d(tuple(kernel), tuple(stride)))
        self.ct_size = ct_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_global_feature(x)
        B, C, H, W = x.shape
        c = self.ct_size
        x = x.reshape(B, C, H // c, c, W // c, c).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, H * W, C)
