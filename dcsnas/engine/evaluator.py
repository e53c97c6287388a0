"""Feature extraction and Re-ID evaluation of a model on a query/gallery split (through
:func:`dcsnas.metrics.evaluate_features`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
from torch import nn

from dcsnas.data.base import ImageRecord
from dcsnas.data.loaders import build_test_loader
from dcsnas.data.transforms import build_transforms
from dcsnas.engine.config import EvalConfig
from dcsnas.engine.device import resolve_device
from dcsnas.engine.inference import load_run_model
from dcsnas.metrics import evaluate_features, summarize
from dcsnas.utils.progress import progress


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
    qf = extract_features(model, query, transform, batch_size, device, cfg.flip, num_workers, amp_dtype,
                          "query features", show_progress)
    gf = extract_features(model, gallery, transform, batch_size, device, cfg.flip, num_workers, amp_dtype,
                          "gallery features", show_progress)
    arrays = [np.asarray([getattr(r, key) for r in recs]) for key in ("pid", "camid") for recs in (query, gallery)]
    q_pids, g_pids, q_camids, g_camids = arrays
    result = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric=cfg.metric, rerank=cfg.rerank,
                               max_rank=cfg.max_rank, protocol=cfg.protocol, seed=cfg.protocol_seed)
    return summarize(result)


def extract_run_features(run_path, checkpoint: str = "last", flip: bool | None = None, device: str = "auto",
                         show_progress: bool = True, dataset: str | None = None,
                         root: str | None = None) -> tuple[dict, dict]:
    """Query and gallery features of a trained run (:func:`~dcsnas.engine.inference.load_run_model`) on its
    data set, or on ``dataset`` at ``root`` (cross-domain: another data set's query and gallery; the run's
    ``data.options`` are kept only for its own data set). Returns ``(arrays, info)``: ``arrays`` has the keys
    of a features file (qf, gf, q_pids, g_pids, q_camids, g_camids, q_paths, g_paths); ``info`` names the run,
    checkpoint, epoch, the data set evaluated and the one trained on, and the run's eval settings."""
    loaded = load_run_model(run_path, checkpoint, finished=False)
    model, cfg = loaded.model, loaded.config
    trained_on = cfg.data.dataset
    if dataset is not None or root is not None:
        name = dataset or cfg.data.dataset
        cfg = replace(cfg, data=replace(cfg.data, dataset=name, root=root or cfg.data.root,
                                        options=cfg.data.options if name == trained_on else {}))
    flip = cfg.eval.flip if flip is None else flip
    torch_device = resolve_device(device)
    model.to(torch_device)
    data = cfg.data.load()
    transform = build_transforms(cfg.data.transforms, False)
    arrays = {}
    for prefix, records in (("q", data.query), ("g", data.gallery)):
        feats = extract_features(model, records, transform, cfg.data.test_batch_size, torch_device, flip,
                                 cfg.data.num_workers, desc=f"{prefix} features", show_progress=show_progress)
        arrays.update({f"{prefix}f": feats, f"{prefix}_pids": np.asarray([r.pid for r in records]),
                       f"{prefix}_camids": np.asarray([r.camid for r in records]),
                       f"{prefix}_paths": np.asarray([r.path for r in records])})
    info = {"run": loaded.metadata["run"], "checkpoint": checkpoint, "epoch": loaded.metadata["epoch"],
            "dataset": data.name, "root": cfg.data.root, "trained_on": trained_on, "flip": flip,
            "metric": cfg.eval.metric, "rerank": cfg.eval.rerank, "protocol": cfg.eval.protocol,
            "protocol_seed": cfg.eval.protocol_seed, "max_rank": cfg.eval.max_rank}
    return arrays, info
