"""Feature extraction and Re-ID evaluation of a model on a query/gallery split (through
:func:`dcsnas.metrics.evaluate_features`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

from dcsnas.data.base import ImageRecord
from dcsnas.data.loaders import build_test_loader
from dcsnas.engine.logging import progress


@dataclass
class EvalConfig:
    """The ``eval`` config section. ``every``: evaluate on the test split every N epochs (0: at the end
    only); the test split is reported, never used to select a checkpoint. ``val_identities`` > 0 carves a
    validation query/gallery split from that many training identities, and ``best.pt`` is chosen on it."""

    every: int = 10
    flip: bool = False
    rerank: bool = False
    metric: Literal["euclidean", "cosine"] = "euclidean"
    max_rank: int = 50
    val_identities: int = 0


@torch.no_grad()
def extract_features(model: nn.Module, records: Sequence[ImageRecord], transform, batch_size: int, device: torch.device,
                     flip: bool = False, num_workers: int = 0, amp_dtype: torch.dtype | None = None,
                     desc: str = "features", show_progress: bool = True) -> torch.Tensor:
    """Embeddings ``[N, D]`` (fp32, on ``device``) of ``records`` in order; ``flip`` averages with the
    horizontally flipped image's embedding."""
    was_training = model.training
    model.eval()
    loader = build_test_loader(records, transform, batch_size, num_workers)
    chunks = []
    for images, *_ in progress(loader, desc, enabled=show_progress):
        images = images.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            feats = model(images).float()
            if flip:
                feats = (feats + model(images.flip(3)).float()) / 2
        chunks.append(feats)
    model.train(was_training)
    return torch.cat(chunks)


def evaluate_model(model: nn.Module, query: Sequence[ImageRecord], gallery: Sequence[ImageRecord], transform,
                   cfg: EvalConfig, batch_size: int, device: torch.device, num_workers: int = 0,
                   amp_dtype: torch.dtype | None = None, show_progress: bool = True) -> dict:
    """mAP, mINP, CMC (rank-1/5/10) of ``model`` on a query/gallery split."""
    from dcsnas.metrics import evaluate_features

    qf = extract_features(model, query, transform, batch_size, device, cfg.flip, num_workers, amp_dtype,
                          "query features", show_progress)
    gf = extract_features(model, gallery, transform, batch_size, device, cfg.flip, num_workers, amp_dtype,
                          "gallery features", show_progress)
    arrays = [np.asarray([getattr(r, key) for r in recs]) for key in ("pid", "camid") for recs in (query, gallery)]
    q_pids, g_pids, q_camids, g_camids = arrays
    result = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric=cfg.metric, rerank=cfg.rerank,
                               max_rank=cfg.max_rank)
    return summarize(result)


def summarize(result: dict) -> dict:
    """The scalar metrics of an ``evaluate_*`` result (mAP, mINP, rank-1/5/10) plus the CMC curve as a list."""
    cmc = np.asarray(result["cmc"])
    out = {"mAP": float(result["mAP"]), "mINP": float(result["mINP"]),
           "num_valid_queries": int(result["num_valid_queries"])}
    for k in (1, 5, 10):
        if k <= len(cmc):
            out[f"rank{k}"] = float(cmc[k - 1])
    out["cmc"] = cmc.tolist()
    return out



def evaluate_run(run_path, checkpoint: str = "last", flip: bool | None = None, rerank: bool | None = None,
                 device: str = "auto", show_progress: bool = True) -> dict:
    """Evaluate a trained run directory: rebuild its model from the saved config, load
    ``checkpoints/<checkpoint>.pt`` and compute the test metrics (``flip``/``rerank`` override the run's
    ``eval`` settings)."""
    import dataclasses

    from dcsnas.config import from_dict
    from dcsnas.data.transforms import build_transforms
    from dcsnas.engine.checkpoint import load_checkpoint, load_model_state
    from dcsnas.engine.config import TrainConfig
    from dcsnas.engine.rundir import open_run_dir
    from dcsnas.engine.trainer import resolve_device
    from dcsnas.models.builder import create_model

    run = open_run_dir(run_path)
    cfg = from_dict(TrainConfig, run.saved_config())
    eval_cfg = dataclasses.replace(cfg.eval, flip=cfg.eval.flip if flip is None else flip,
                                   rerank=cfg.eval.rerank if rerank is None else rerank)
    path = run.checkpoints / f"{checkpoint}.pt"
    state = load_checkpoint(path)
    model = create_model(cfg.model, state["num_classes"])
    load_model_state(model, state["model"], str(path))
    torch_device = resolve_device(device)
    model.to(torch_device)
    dataset = cfg.data.load()
    metrics = evaluate_model(model, dataset.query, dataset.gallery, build_transforms(cfg.data.transforms, False),
                             eval_cfg, cfg.data.test_batch_size, torch_device, cfg.data.num_workers,
                             show_progress=show_progress)
    return {"run": str(run.path), "checkpoint": checkpoint, "epoch": state["epoch"] + 1, "dataset": dataset.name,
            "flip": eval_cfg.flip, "rerank": eval_cfg.rerank, **metrics}
