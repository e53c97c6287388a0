"""Vision Transformer backbones from timm (DESIGN §5), TransReID-style, with DCS in their own attention.

``vit_micro`` (CPU recipes and tests: 96 channels, 6 blocks, 3 heads, 8×8 patches), ``vit_tiny``,
``vit_small`` and ``vit_base`` (timm's ``vit_*_patch16_224``: 192/384/768 channels, 12 blocks, 3/6/12 heads,
16×16 patches) are built by ``timm.create_model`` at the run's input size ``img_size`` (H, W), the
position embedding interpolated to its patch grid. ``patch_stride`` < patch size gives TransReID's
overlapping patches (its "sliding window": a 256×128 input with 16×16 patches at stride 12 is a 21×10
grid): the patch convolution keeps its weights and only its stride changes, and the position embedding is
resampled to the new grid. Every block's attention becomes a :class:`~dcsnas.attention.token_dcs.TokenAttention`
with the same weights (its analytic FLOPs: the fused attention product counts 0 on CPU); the blocks in
``dcs_blocks`` get DCS gates on Q and K.

The backbone is one stage, ``vit``, whose output is the ``[CLS]`` token after the final norm as a
[B, D, 1, 1] map, so the BNNeck head, the IB loss (its ``pooled`` features) and evaluation read the
``[CLS]`` embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dcsnas.attention.token_dcs import TokenAttention
from dcsnas.errors import ConfigError
from dcsnas.models.backbones import BACKBONES, Backbone

STAGE = "vit"

# name -> (timm model, options given to timm.create_model)
VIT_SIZES: dict[str, tuple[str, dict[str, Any]]] = {
    "vit_micro": ("vit_tiny_patch16_224", {"embed_dim": 96, "depth": 6, "num_heads": 3, "patch_size": 8}),
    "vit_tiny": ("vit_tiny_patch16_224", {}),
    "vit_small": ("vit_small_patch16_224", {}),
    "vit_base": ("vit_base_patch16_224", {}),
}


class ClassTokenStage(nn.Module):
    """A timm ViT as one backbone stage: images [B, 3, H, W] -> the normalised ``[CLS]`` token [B, D, 1, 1].

    :meth:`run` also returns the kept ratio of each DCS block's gates: it runs timm's ``forward_features``
    itself, and the blocks with DCS gates piece by piece as timm's ``Block.forward`` does (pre-norm attention
    and MLP, each through its layer scale and drop path onto the residual), their attention called with
    ``need_kept=True``."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def run(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``x`` [B, 3, H, W] -> the ``[CLS]`` map [B, D, 1, 1] and ``{"vit.block<i>": kept ratio}`` (0-dim) of
        the blocks with DCS gates."""
        vit = self.vit
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        kept: dict[str, Tensor] = {}
        for i, block in enumerate(vit.blocks):
            if getattr(block.attn, "gate", None) is None:
                x = block(x)
                continue
            out, kept[f"{STAGE}.block{i}"] = block.attn(block.norm1(x), need_kept=True)
            x = x + block.drop_path1(block.ls1(out))
            x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        return vit.norm(x)[:, 0, :, None, None], kept

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x)[0]


def _create_timm(name: str, pretrained: bool, img_size: tuple[int, int], options: dict[str, Any]) -> nn.Module:
    import timm  # heavy: imported when a ViT is built

    try:
        return timm.create_model(name, pretrained=pretrained, img_size=img_size, num_classes=0, **options)
    except Exception as exc:  # noqa: BLE001 - no network / no cached file: any failure of the download
        if not pretrained:
            raise
        raise ConfigError(f"model.pretrained=true: timm's ImageNet weights of {name} cannot be loaded "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); put them in "
                          "the Hugging Face cache ($HF_HOME) or set model.pretrained=false") from None


def _overlap_patches(vit: nn.Module, stride: int) -> None:
    """Make ``vit``'s patch convolution run at ``stride`` (< its kernel: overlapping patches) and resample its
    position embedding to the new grid."""
    from timm.layers import resample_abs_pos_embed

    embed = vit.patch_embed
    old_grid = tuple(embed.grid_size)
    embed.proj.stride = (stride, stride)
    height, width = embed.img_size
    kernel = embed.proj.kernel_size
    grid = ((height - kernel[0]) // stride + 1, (width - kernel[1]) // stride + 1)
    embed.grid_size, embed.num_patches = grid, grid[0] * grid[1]
    prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
    with torch.no_grad():
        resampled = resample_abs_pos_embed(vit.pos_embed.data, list(grid), list(old_grid), num_prefix_tokens=prefix)
    vit.pos_embed = nn.Parameter(resampled)


def vit_backbone(size: str, img_size: Sequence[int], pretrained: bool = False, patch_stride: int = 0,
                 dcs_blocks: Sequence[int] = (), drop_path: float = 0.0) -> Backbone:
    """The ViT ``size`` (a key of :data:`VIT_SIZES`) for inputs ``img_size`` = (H, W); ``patch_stride`` 0: the
    patch size (no overlap); ``dcs_blocks``: indices of the blocks whose attention gets DCS gates;
    ``drop_path``: timm's stochastic depth rate (linear over the blocks up to this value)."""
    if len(img_size) != 2 or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in img_size):
        raise ConfigError(f"model.img_size = {list(img_size)!r}: a ViT needs the input size [height, width] "
                          "(as data.transforms.height and width)")
    name, options = VIT_SIZES[size]
    vit = _create_timm(name, pretrained, (img_size[0], img_size[1]), {**options, "drop_path_rate": drop_path})
    patch = vit.patch_embed.proj.kernel_size[0]
    if patch_stride < 0 or patch_stride > patch:
        raise ConfigError(f"model.patch_stride = {patch_stride}: expected 0 (the patch size, {patch}) or 1..{patch}")
    if min(img_size) < patch:
        raise ConfigError(f"model.img_size = {list(img_size)}: smaller than {size}'s {patch}×{patch} patches")
    stride = patch_stride or patch
    if stride != patch:
        _overlap_patches(vit, stride)
    depth = len(vit.blocks)
    for i in dcs_blocks:
        if not 0 <= i < depth:
            raise ConfigError(f"model.dcs_blocks: block {i} does not exist; {size} has blocks 0..{depth - 1}")
    for i, block in enumerate(vit.blocks):
        block.attn = TokenAttention(block.attn, dcs=i in set(dcs_blocks))
    return Backbone({STAGE: ClassTokenStage(vit)}, {STAGE: vit.embed_dim}, {STAGE: stride})


def _register(size: str) -> None:
    def build(img_size: Sequence[int] = (), pretrained: bool = False, patch_stride: int = 0,
              dcs_blocks: Sequence[int] = (), drop_path: float = 0.0) -> Backbone:
        return vit_backbone(size, img_size, pretrained, patch_stride, dcs_blocks, drop_path)

    build.__doc__ = f"{size}: {VIT_SIZES[size][0]} with {VIT_SIZES[size][1] or 'its own sizes'} (module docstring)."
    BACKBONES.register(size)(build)


for _size in VIT_SIZES:
    _register(_size)
