"""What a trained network's attention modules do on given images, as numbers and as one PNG per image.

For each attention module (by the stage it follows) on a batch of images:

- ``received`` [B, h, w]: the attention each position receives, the map A [B, G, n, n] (rows: query
  positions, each summing to 1) averaged over the groups and the query positions; uniform attention gives
  1/n everywhere;
- ``kept`` [B, h, w] (DCS modules only): the fraction of query/key channels the DCS gate keeps at each
  position (its eval-mode mask M = 1[gate logit > 0]).

For a ViT (:mod:`dcsnas.models.vit`), per block with DCS gates and for the last block:

- ``head h`` [B, gh, gw]: the attention the ``[CLS]`` token pays to each patch in head h (its row of the
  map, without the ``[CLS]`` column), on the patch grid;
- ``kept`` [B, gh, gw] (DCS blocks): the fraction of Q/K channels (over heads) kept at each patch.

The modules' inputs (the outputs of the backbone stages they follow; a ViT block's attention input) are caught
by forward hooks during one eval-mode forward; each module is then called again on its input with
``need_weights=True`` (a ViT block's: :meth:`TokenAttention.attention_weights`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from dcsnas.attention import DCSAttention
from dcsnas.attention.token_dcs import TokenAttention
from dcsnas.models.vit import ClassTokenStage


@torch.no_grad()
def attention_outputs(model: nn.Module, images: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """Stage name → ``{"received": [B, h, w]}`` (+ ``"kept"`` for DCS) of ``model``'s attention modules on
    ``images`` [B, 3, H, W] (normalised like the test transform); the model's mode is restored."""
    vit_blocks = _shown_vit_blocks(model)
    modules = {**dict(model.attentions.items()), **vit_blocks}
    inputs: dict[str, torch.Tensor] = {}
    stages = model.backbone.stages
    hooks = [stages[name].register_forward_hook(lambda m, args, out, name=name: inputs.__setitem__(name, out))
             for name in model.attentions]
    hooks += [module.register_forward_pre_hook(lambda m, args, name=name: inputs.__setitem__(name, args[0]))
              for name, module in vit_blocks.items()]
    was_training = model.training
    try:
        model.eval()
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
    out = {}
    grids = [tuple(m.vit.patch_embed.grid_size) for m in model.modules() if isinstance(m, ClassTokenStage)]
    for name, module in modules.items():
        if isinstance(module, TokenAttention):
            out[name] = _token_maps(module, inputs[name].float(), grids[0])
            continue
        x = inputs[name].float()
        batch, _, height, width = x.shape
        _, attn = module(x, need_weights=True)
        maps = {"received": attn.float().mean(dim=(1, 2)).reshape(batch, height, width)}
        if isinstance(module, DCSAttention):
            maps["kept"] = module.channel_mask(x).float().mean(dim=1)
        out[name] = maps
    model.train(was_training)
    return out


def _shown_vit_blocks(model: nn.Module) -> dict[str, TokenAttention]:
    """``block i`` → the attention of the ViT blocks with DCS gates and of the last block."""
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, TokenAttention)]
    return {f"block {name.split('.')[-2]}": m for i, (name, m) in enumerate(blocks)
            if m.gate is not None or i == len(blocks) - 1}


def _token_maps(module: TokenAttention, x: torch.Tensor, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Per head the [CLS] row of the attention on the patches, and the kept fraction per patch (DCS), as
    [B, gh, gw] maps (tokens ``x`` [B, 1 + gh·gw, D])."""
    batch = x.shape[0]
    weights = module.attention_weights(x)[:, :, 0, 1:]  # [B, H, patches]
    maps = {f"head {h}": weights[:, h].reshape(batch, *grid) for h in range(weights.shape[1])}
    if module.gate is not None:
        maps["kept"] = module.channel_mask(x)[:, :, 1:].float().mean(dim=(1, 3)).reshape(batch, *grid)
    return maps


def save_attention_figures(out_dir: str | Path, images: Sequence, outputs: dict[str, dict[str, torch.Tensor]],
                           names: Sequence[str]) -> list[Path]:
    """One PNG per image (``names[i]``.png): the image (PIL, as shown), then per module the attention it
    receives and, for DCS, the kept channel fraction, each with a labelled colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = [(stage, kind) for stage, maps in outputs.items() for kind in maps]
    labels = {"received": "attention received\n(mean over queries; uniform = 1/n)",
              "kept": "DCS: kept query/key\nchannels (fraction)"}
    paths = []
    for i, (image, name) in enumerate(zip(images, names)):
        fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.2 * (len(panels) + 1), 3.6), squeeze=False)
        axes[0, 0].imshow(image)
        axes[0, 0].set_title(name, fontsize=7)
        for ax, (stage, kind) in zip(axes[0, 1:], panels):
            values = outputs[stage][kind][i].cpu().numpy()
            shown = ax.imshow(values, cmap="inferno", vmin=0 if kind == "kept" else None,
                              vmax=1 if kind == "kept" else None)
            where = stage if stage.startswith("block") else f"after {stage}"
            ax.set_title(f"{where}: {labels.get(kind, f'[CLS] attention, {kind}')}", fontsize=7)
            fig.colorbar(shown, ax=ax, fraction=0.08)
        for ax in axes[0]:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
