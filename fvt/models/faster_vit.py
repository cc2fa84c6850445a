"""FasterViT: convolutional early stages, hierarchical attention (HAT) later stages.

One generic constructor: dims, depths, heads, window and carrier-token sizes, HAT
placement and layer scale are arguments, so a variant is just a registry entry.
The input size is fixed at construction (it decides windows and carrier tokens);
``fvt.models.windows.plan_stages`` chooses them and validates the size.

The model is scriptable (``torch.jit.script``) and traceable (``torch.fx``); the eval shortcuts
(BatchNorm folded into the convs, cached position biases) run in eager mode only, see layers.py.
``forward_intermediates`` / ``prune_intermediate_layers`` follow timm's feature-extraction contract.
"""

from contextlib import nullcontext
from typing import List, Optional, Sequence, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d, trunc_normal_
from torch.utils.checkpoint import checkpoint

from ..errors import UsageError
from .blocks import ConvBlock, Downsample, HATBlock, PatchEmbed, TokenInitializer
from .layers import crop_to, pad_to_multiple, window_partition, window_reverse
from .windows import StagePlan, plan_stages

# graph leaves for torch.fx: padding depends on the run-time feature-map size
torch.fx.wrap("pad_to_multiple")
torch.fx.wrap("crop_to")
POOLS = ("avg", "")  # global_pool: average pooling, or none (forward returns a map)


class FasterViTStage(nn.Module):
    """A stage's blocks, then (all but the last stage) its downsampling. ``out`` (an identity) marks
    the stage's feature map, before the downsampling: timm's hook and fx feature extractors tap it."""

    __constants__ = ["conv", "carrier", "window"]  # TorchScript compiles only the live branches

    def __init__(self, dim: int, depth: int, plan: StagePlan, num_heads: int, conv: bool, downsample: bool,
                 mlp_ratio: float, qkv_bias: bool, drop: float, attn_drop: float, drop_path: Sequence[float],
                 layer_scale: Optional[float], layer_scale_conv: Optional[float], do_propagation: bool) -> None:
        super().__init__()
        self.conv = conv
        self.plan = plan
        self.window = plan.window
        self.grad_checkpointing = False
        if conv:
            self.blocks = nn.ModuleList([ConvBlock(dim, drop_path[i], layer_scale_conv) for i in range(depth)])
        else:
            self.blocks = nn.ModuleList([
                HATBlock(dim, num_heads, plan.window, plan.sr, plan.ct_size, mlp_ratio, qkv_bias, drop, attn_drop,
                         drop_path[i], layer_scale, last=(i == depth - 1), do_propagation=do_propagation)
                for i in range(depth)])
        self.downsample = Downsample(dim) if downsample else None
        if not conv and depth > 0 and plan.tokenizer:
            self.global_tokenizer = TokenInitializer(dim, plan.padded, plan.window, plan.ct_size)
        # carrier tokens are only consumed when there is more than one window
        self.carrier = not conv and depth > 0 and plan.tokenizer and (plan.sr[0] > 1 or plan.sr[1] > 1)
        self.out = nn.Identity()

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's feature map (before the downsampling)."""
        if self.conv:
            for blk in self.blocks:
                if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                    x = checkpoint(blk, x, use_reentrant=False)
                else:
                    x = blk(x)
            return self.out(x)
        h, w = x.shape[2], x.shape[3]
        x = pad_to_multiple(x, self.window)
        ct: Optional[torch.Tensor] = None
        if self.carrier:
            ct = self.global_tokenizer(x)
        hp, wp = x.shape[2], x.shape[3]
        x = window_partition(x, self.window)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x, ct = checkpoint(blk, x, ct, use_reentrant=False)
            else:
                x, ct = blk(x, ct)
        x = window_reverse(x, self.window, hp, wp)
        return self.out(crop_to(x, h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_blocks(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class FasterViT(nn.Module):
    """FasterViT classifier. ``img_size`` is (H, W) or an int; ``window_size`` a per-stage
    list (``None`` entries or ``None`` overall: chosen automatically, see plan_stages).
    ``global_pool``: "avg", or "" for none: ``forward`` then gives the feature map (``num_classes=0``)
    or class logits at every position (B, num_classes, H, W).
    ``device`` / ``dtype``: where and in which precision parameters and buffers are created
    (``device="meta"`` builds the structure without allocating memory)."""

    __jit_unused_properties__ = ["stages"]

    def __init__(self, dim: int = 64, in_dim: int = 64, depths: Sequence[int] = (2, 3, 6, 5),
                 num_heads: Sequence[int] = (2, 4, 8, 16), window_size=None, ct_size: int = 2,
                 mlp_ratio: float = 4.0, img_size=224, drop_path_rate: float = 0.2, in_chans: int = 3,
                 num_classes: int = 1000, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, layer_scale: Optional[float] = None,
                 layer_scale_conv: Optional[float] = None, hat: Sequence[bool] = (False, False, True, False),
                 do_propagation: bool = False, conv_stages: int = 2, pad_to_window: bool = False,
                 default_window_size: Optional[Sequence[int]] = None, default_img_size=None,
                 global_pool: str = "avg", device=None, dtype=None) -> None:
        super().__init__()
        _check_pool(global_pool)
        n = len(depths)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = int(dim * 2 ** (n - 1))
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.plans = plan_stages(img_size, n, conv_stages, hat, window_size, ct_size, pad_to_window,
                                 default_window_size, default_img_size)
        self.img_size = self.plans[0].img_size
        with torch.device(device) if device is not None else nullcontext():
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
                self.feature_info.append(dict(num_chs=d, reduction=2 ** (i + 2), module=f"levels.{i}.out"))
            self.norm = nn.BatchNorm2d(self.num_features)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
            self.apply(self._init_weights)
        if dtype is not None:
            self.to(dtype=dtype)

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

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new head for ``num_classes`` (0: none), on the model's device, in its dtype and mode;
        ``global_pool`` None keeps the pooling."""
        pool = self.global_pool if global_pool is None else global_pool
        _check_pool(pool)
        self.num_classes, self.global_pool = num_classes, pool
        ref = next(self.parameters())
        if num_classes > 0:
            self.head = nn.Linear(self.head_hidden_size, num_classes, device=ref.device, dtype=ref.dtype)
            self._init_weights(self.head)
        else:
            self.head = nn.Identity()
        self.head.train(self.training)
        if hasattr(self, "model_kwargs"):
            self.model_kwargs["num_classes"] = num_classes
            if global_pool is not None:
                self.model_kwargs["global_pool"] = pool

    # -- forward --------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for level in self.levels:
            x = level(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.global_pool == "avg"
        if pooled:
            x = self.avgpool(x).flatten(1)
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        if pre_logits:
            return x
        if pooled:
            return self.head(x)
        return self.head(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # unpooled: logits at every position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # -- timm's feature-extraction contract -----------------------------------------------
    @torch.jit.ignore
    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """Stage feature maps (before each downsampling; strides 4, 8, 16, 32), as timm models give them.

        ``indices``: None (all), an int n (the last n) or a list of stage indices (negative from the end).
        ``norm``: the final norm on the last stage's map. ``stop_early`` / ``intermediates_only``: run no
        stage past the last one asked for. ``output_fmt``: "NCHW" or "NHWC". Returns the list, or
        (final features, list); after an early stop the final features are the last stage run."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise UsageError(f"output_fmt {output_fmt!r}: FasterViT gives 'NCHW' or 'NHWC' feature maps")
        n = len(self.levels)
        take, last_taken = take_indices(n, indices)
        stop = last_taken if stop_early or intermediates_only else n - 1
        out: List[torch.Tensor] = []
        x = self.patch_embed(x)
        for i, level in enumerate(self.levels):
            if i > stop:
                break
            x = level.forward_blocks(x)
            if i in take:
                y = self.norm(x) if norm and i == n - 1 else x
                out.append(y.permute(0, 2, 3, 1) if output_fmt == "NHWC" else y)
            if i < stop and level.downsample is not None:
                x = level.downsample(x)
        if intermediates_only:
            return out
        return (self.norm(x) if stop == n - 1 else x), out

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True) -> List[int]:
        """Drop every stage after the last one in ``indices`` (and the downsampling that followed it);
        ``prune_norm`` / ``prune_head`` also drop the final norm / the classifier and pooling. The final
        norm is sized for the last stage, so it goes whenever that stage does. Returns the absolute
        indices for forward_intermediates. ``feature_info`` keeps describing the unpruned stages."""
        n = len(self.levels)
        take, last_taken = take_indices(n, indices)
        if last_taken < n - 1:
            self.levels = self.levels[:last_taken + 1]
            self.levels[-1].downsample = None
            self.num_features = self.head_hidden_size = self.feature_info[last_taken]["num_chs"]
            self.norm = nn.Identity()
            if not prune_head:  # the old head is sized for the last stage's width
                self.reset_classifier(self.num_classes)
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take


def take_indices(n: int, indices=None) -> Tuple[List[int], int]:
    """Absolute stage indices (and the largest) from None (all), an int (the last n) or a list."""
    if indices is None:
        indices = n
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise UsageError(f"indices={indices}: take the last 1 to {n} stages")
        take = list(range(n - indices, n))
    else:
        take = [n + int(i) if int(i) < 0 else int(i) for i in indices]
        if not take or not all(0 <= i < n for i in take):
            raise UsageError(f"indices={list(indices)}: stage indices are 0 to {n - 1} (or -{n} to -1)")
    return take, max(take)


def _check_pool(global_pool: str) -> None:
    if global_pool not in POOLS:
        raise UsageError(f"global_pool={global_pool!r}: FasterViT pools with 'avg' or not at all ('')")
