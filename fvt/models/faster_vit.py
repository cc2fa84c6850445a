"""FasterViT: convolutional early stages, hierarchical attention (HAT) later stages.

One generic constructor: dims, depths, heads, window and carrier-token sizes, HAT
placement and layer scale are arguments, so a variant is just a registry entry.
The input size is fixed at construction (it decides windows and carrier tokens);
``fvt.models.windows.plan_stages`` chooses them and validates the size.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from torch.utils.checkpoint import checkpoint

from .layers import (FoldCache, Mlp, TokenPosEmbed, can_fold, WindowAttention, carrier_to_grid, grid_to_carrier,
                     window_partition, window_reverse)
from .windows import StagePlan, plan_stages


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convs (stride 4 overall)."""

    def __init__(self, in_chans: int, in_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Identity()
        self.conv_down = nn.Sequential(
            nn.Conv2d(in_chans, in_dim, 3, 2, 1, bias=False), nn.BatchNorm2d(in_dim, eps=1e-4), nn.ReLU(),
            nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False), nn.BatchNorm2d(dim, eps=1e-4), nn.ReLU())
        self._fold = FoldCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv_down
        if can_fold(self, c[1]):
            (w1, b1), (w2, b2) = self._fold.get([(c[0], c[1]), (c[3], c[4])])
            x = F.relu(F.conv2d(x, w1, b1, 2, 1))
            return F.relu(F.conv2d(x, w2, b2, 2, 1))
        return c(x)


class Downsample(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.reduction = nn.Sequential(nn.Conv2d(dim, 2 * dim, 3, 2, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(x))


class ConvBlock(nn.Module):
    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale: Optional[float] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm1 = nn.BatchNorm2d(dim, eps=1e-5)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm2 = nn.BatchNorm2d(dim, eps=1e-5)
        if layer_scale is not None:
            self.gamma = nn.Parameter(layer_scale * torch.ones(dim))
        else:
            self.register_parameter("gamma", None)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self._fold = FoldCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if can_fold(self, self.norm1):  # inference: BatchNorm folded into the convs
            (w1, b1), (w2, b2) = self._fold.get([(self.conv1, self.norm1), (self.conv2, self.norm2)])
            y = F.conv2d(self.act1(F.conv2d(x, w1, b1, 1, 1)), w2, b2, 1, 1)
        else:
            y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)


def _scale(gamma: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return x if gamma is None else gamma * x


class HATBlock(nn.Module):
    """Window attention over local tokens plus their carrier tokens; the carrier tokens
    first attend to each other globally (hierarchical attention). Without carrier tokens
    (``sr == (1, 1)``) this is plain window attention."""

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

    def forward(self, x: torch.Tensor, ct: Optional[torch.Tensor]):
        x = self.pos_embed(x)
        if self.do_hat:
            Bw, T, C = x.shape
            B = ct.shape[0]
            sh, sw, c = self.sr[0], self.sr[1], self.ct_size
            ct = carrier_to_grid(ct, sh, sw, c)
            if self.square:
                ct = self.hat_pos_embed(ct)
            ct = ct + self.hat_drop_path(_scale(self.gamma1, self.hat_attn(self.hat_norm1(ct))))
            ct = ct + self.hat_drop_path(_scale(self.gamma2, self.hat_mlp(self.hat_norm2(ct))))
            ct = grid_to_carrier(ct, sh, sw, c).reshape(Bw, c * c, C)
            x = torch.cat((ct, x), dim=1)
        x = x + self.drop_path(_scale(self.gamma3, self.attn(self.norm1(x))))
        x = x + self.drop_path(_scale(self.gamma4, self.mlp(self.norm2(x))))
        if self.do_hat:
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


class FasterViTStage(nn.Module):
    def __init__(self, dim: int, depth: int, plan: StagePlan, num_heads: int, conv: bool, downsample: bool,
                 mlp_ratio: float, qkv_bias: bool, drop: float, attn_drop: float, drop_path: Sequence[float],
                 layer_scale: Optional[float], layer_scale_conv: Optional[float], do_propagation: bool) -> None:
        super().__init__()
        self.conv = conv
        self.plan = plan
        self.grad_checkpointing = False
        if conv:
            self.blocks = nn.ModuleList([ConvBlock(dim, drop_path[i], layer_scale_conv) for i in range(depth)])
        else:
            self.blocks = nn.ModuleList([
                HATBlock(dim, num_heads, plan.window, plan.sr, plan.ct_size, mlp_ratio, qkv_bias, drop, attn_drop,
                         drop_path[i], layer_scale, last=(i == depth - 1), do_propagation=do_propagation)
                for i in range(depth)])
        self.downsample = Downsample(dim) if downsample else None
        self.do_gt = not conv and depth > 0 and plan.tokenizer
        if self.do_gt:
            self.global_tokenizer = TokenInitializer(dim, plan.padded, plan.window, plan.ct_size)
        self.do_hat = not conv and (plan.sr[0] > 1 or plan.sr[1] > 1)

    def _run(self, blk, *args):
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return checkpoint(blk, *args, use_reentrant=False)
        return blk(*args)

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv:
            for blk in self.blocks:
                x = self._run(blk, x)
            return x
        B, C, H, W = x.shape
        w = self.plan.window
        pad_b, pad_r = (w - H % w) % w, (w - W % w) % w
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        # carrier tokens are only consumed when there is more than one window
        ct = self.global_tokenizer(x) if self.do_gt and self.do_hat else None
        x = window_partition(x, w)
        for blk in self.blocks:
            x, ct = self._run(blk, x, ct)
        x = window_reverse(x, w, Hp, Wp)
        if pad_b or pad_r:
            x = x[:, :, :H, :W].contiguous()
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_blocks(x)
        return x if self.downsample is None else self.downsample(x)


class FasterViT(nn.Module):
    """FasterViT classifier. ``img_size`` is (H, W) or an int; ``window_size`` a per-stage
    list (``None`` entries or ``None`` overall: chosen automatically, see plan_stages)."""

    def __init__(self, dim: int = 64, in_dim: int = 64, depths: Sequence[int] = (2, 3, 6, 5),
                 num_heads: Sequence[int] = (2, 4, 8, 16), window_size=None, ct_size: int = 2,
                 mlp_ratio: float = 4.0, img_size=224, drop_path_rate: float = 0.2, in_chans: int = 3,
                 num_classes: int = 1000, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, layer_scale: Optional[float] = None,
                 layer_scale_conv: Optional[float] = None, hat: Sequence[bool] = (False, False, True, False),
                 do_propagation: bool = False, conv_stages: int = 2, pad_to_window: bool = False,
                 default_window_size: Optional[Sequence[int]] = None, default_img_size=None) -> None:
        super().__init__()
        n = len(depths)
        self.num_classes = num_classes
        self.num_features = int(dim * 2 ** (n - 1))
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.plans = plan_stages(img_size, n, conv_stages, hat, window_size, ct_size, pad_to_window,
                                 default_window_size, default_img_size)
        self.img_size = self.plans[0].img_size
        self.patch_embed = PatchEmbed(in_chans, in_dim, dim)
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.levels = nn.ModuleList()
        self.feature_info = []
        for i in range(n):
            d = int(dim * 2 ** i)
            self.levels.append(FasterViTStage(
                d, depths[i], self.plans[i], num_heads[i], conv=i < conv_stages, downsample=i < n - 1,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], layer_scale=layer_scale,
                layer_scale_conv=layer_scale_conv, do_propagation=do_propagation))
            self.feature_info.append(dict(num_chs=d, reduction=2 ** (i + 2), module=f"levels.{i}"))
        self.norm = nn.BatchNorm2d(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, LayerNorm2d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # -- timm-style surface ---------------------------------------------------------
    @property
    def stages(self) -> nn.ModuleList:
        return self.levels

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {n for n, _ in self.named_parameters() if "cpb_mlp" in n}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        if coarse:
            return dict(stem=r"^patch_embed", blocks=[(r"^levels\.(\d+)", None), (r"^norm", (99999,))])
        return dict(stem=r"^patch_embed", blocks=[
            (r"^levels\.(\d+)\.global_tokenizer", (0,)),
            (r"^levels\.(\d+)\.blocks\.(\d+)", None),
            (r"^levels\.(\d+)\.downsample", (99999,)),
            (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for s in self.levels:
            s.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool=None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            self._init_weights(self.head)
        if hasattr(self, "model_kwargs"):
            self.model_kwargs["num_classes"] = num_classes

    # -- forward --------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for level in self.levels:
            x = level(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x).flatten(1)
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False,
                              intermediates_only: bool = False):
        """Feature maps (NCHW) at strides 4, 8, 16, 32 (stage outputs before downsampling).
        ``indices``: an int (last n) or a list of stage indices; ``norm`` applies the final
        norm to the last stage. Returns the list, or (final features, list)."""
        n = len(self.levels)
        if indices is None:
            take = list(range(n))
        elif isinstance(indices, int):
            take = list(range(n - indices, n))
        else:
            take = [i % n for i in indices]
        out = []
        x = self.patch_embed(x)
        last = max(take) if intermediates_only else n - 1
        for i, level in enumerate(self.levels[:last + 1]):
            x = level.forward_blocks(x)
            if i in take:
                out.append(self.norm(x) if (norm and i == n - 1) else x)
            if level.downsample is not None and i < last:
                x = level.downsample(x)
        if intermediates_only:
            return out
        return self.norm(x), out
