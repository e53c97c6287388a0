"""Variational upper bound of the Information-Bottleneck loss I(F; X) - I(F; Y) (DESIGN §4).

Cluster assignments replace the unknown densities:

- phi(v, a) = softmax_a(-beta * ||v / ||v|| - c_a||^2), beta = 1, for features F (k-means centroids c_a
  of the normalised F, recomputed by :meth:`InformationBottleneck.refresh` at every epoch start) and for
  inputs X (centroids of the normalised X, computed by the first ``refresh`` and kept);
- Q(a | y) = mean of phi(F_i, a) over the training samples of identity y, refreshed with the F centroids
  and held constant in between;
- per batch  IBB = ixf + iyf with
    iyf = -1/B sum_i sum_a phi(F_i, a) log Q(a | y_i)                                    (both modes)
    ixf = 1/B sum_i sum_{a,b} phi(F_i, a) phi(X_i, b) log phi(X_i, b)      (``ixf="authors"``, default)
    ixf = sum_{a,b} p(a, b) log[p(a, b) / (p(a) p(b))],
          p(a, b) = 1/B sum_i phi(F_i, a) phi(X_i, b)                      (``ixf="batch_mi"``)

``authors`` is the first term as the DCS authors' released code computes it (``get_IB_Loss`` in their
DCS-Transformer and LTM training code). Because phi(F_i, .) sums to 1 it equals -H(phi(X_i, .)): with X
the input image it is a constant in the network's weights (a valid but loose bound, I(F~; X~) <= I(X; X~)),
logged but never trained; only ``iyf`` trains. It is evaluated literally, so its gradient with respect to F
is zero up to rounding. ``batch_mi`` (ours, beyond the authors) is the plug-in mutual information of the
batch's soft joint of F- and X-clusters; it carries gradient to F, so the bound actually compresses F.

log phi is computed with ``log_softmax`` (exact, never log 0); log Q(a | y) and the logs of ``batch_mi``
take ``log(clamp(., eps))`` so an empty cluster costs log(eps) instead of -inf.

k-means (k-means++ seeding, then Lloyd iterations) is a compact torch implementation that runs on the
features' device, CPU or GPU: one code path, seeded by a ``torch.Generator``, no host copies of
GPU features; scikit-learn would add a second implementation with different results on CPU.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IXF_MODES = ("authors", "batch_mi")


def _sq_distances(x: Tensor, centroids: Tensor) -> Tensor:
    """||x_i - c_a||^2: [N, D], [k, D] -> [N, k]."""
    return (x.square().sum(1, keepdim=True) - 2 * x @ centroids.t() + centroids.square().sum(1)).clamp_min(0)


def kmeans(
    x: Tensor, k: int, iters: int = 50, tol: float = 1e-6, generator: Optional[torch.Generator] = None
) -> Tensor:
    """k-means++ seeding and Lloyd iterations on ``x`` [N, D]; returns centroids [k, D].

    ``generator`` must live on ``x``'s device. A cluster that loses all its points keeps its centroid.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"kmeans: need 1 <= k <= number of points ({n}), got k = {k}")
    centroids = x[torch.randint(n, (1,), generator=generator, device=x.device)]
    closest = _sq_distances(x, centroids).squeeze(1)
    for _ in range(1, k):
        weights = closest + (closest.sum() == 0).float()  # all points equal: pick uniformly
        pick = torch.multinomial(weights, 1, generator=generator)
        centroids = torch.cat([centroids, x[pick]])
        closest = torch.minimum(closest, _sq_distances(x, x[pick]).squeeze(1))
    for _ in range(iters):
        assign = _sq_distances(x, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        shift = (updated - centroids).square().sum()
        centroids = updated
        if shift <= tol:
            break
    return centroids


class InformationBottleneck(nn.Module):
    """The IB bound of DESIGN §4; call :meth:`refresh` at the start of every epoch, then the loss per batch.

    Args:
        num_feature_clusters: k for F; ``None``: the number of training identities.
        num_input_clusters: k for X; ``None``: the number of training identities.
        beta: inverse temperature of phi (1 in DESIGN §4).
        eps: floor of Q(a | y) before the log.
        kmeans_iters: Lloyd iterations per k-means run.
        seed: seed of the k-means generators (repeatable centroids).
        ixf: the first term: ``authors`` (default, constant in the weights) or ``batch_mi``.
    """

    def __init__(
        self,
        num_feature_clusters: Optional[int] = None,
        num_input_clusters: Optional[int] = None,
        beta: float = 1.0,
        eps: float = 1e-8,
        kmeans_iters: int = 50,
        seed: int = 0,
        ixf: Literal["authors", "batch_mi"] = "authors",
    ) -> None:
        super().__init__()
        if ixf not in IXF_MODES:
            raise ValueError(f"ixf must be one of {', '.join(IXF_MODES)}, got {ixf!r}")
        self.ixf = ixf
        self.num_feature_clusters = num_feature_clusters
        self.num_input_clusters = num_input_clusters
        self.beta = beta
        self.eps = eps
        self.kmeans_iters = kmeans_iters
        self.seed = seed
        self.register_buffer("feature_centroids", None)  # [k, D_F]
        self.register_buffer("input_centroids", None)  # [k_X, D_X]
        self.register_buffer("log_q", None)  # log Q(a | y): [num identities, k]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("feature_centroids", "input_centroids", "log_q"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def log_phi(self, features: Tensor, centroids: Tensor) -> Tensor:
        """log phi(v, a) for ``features`` [N, ...] (flattened, normalised) and ``centroids`` [k, D]: [N, k]."""
        v = F.normalize(features.flatten(1).float(), dim=1)
        return torch.log_softmax(-self.beta * _sq_distances(v, centroids), dim=1)

    def _kmeans(self, features: Tensor, k: int) -> Tensor:
        generator = torch.Generator(features.device).manual_seed(self.seed)
        return kmeans(F.normalize(features.flatten(1).float(), dim=1), k, self.kmeans_iters, generator=generator)

    @torch.no_grad()
    def refresh(
        self, features_f: Tensor, features_x: Tensor, labels: Tensor, num_classes: Optional[int] = None
    ) -> None:
        """Recompute the F centroids and Q(a | y) from the whole training split (no gradient).

        Args:
            features_f: F of every training image [N, ...].
            features_x: X of every training image [N, ...]; clustered on the first call only (the X
                centroids are then kept, also through ``state_dict``).
            labels: training identities [N] in 0..num_classes-1.
            num_classes: number of training identities (default: ``labels.max() + 1``).
        """
        labels = labels.to(features_f.device).long()
        num_ids = num_classes or int(labels.max()) + 1
        if self.input_centroids is None:
            self.input_centroids = self._kmeans(features_x, self.num_input_clusters or num_ids)
        k = self.num_feature_clusters or num_ids
        self.feature_centroids = self._kmeans(features_f, k)
        phi = self.log_phi(features_f, self.feature_centroids).exp()  # [N, k]
        sums = torch.zeros(num_ids, k, device=phi.device).index_add_(0, labels, phi)
        counts = torch.bincount(labels, minlength=num_ids).unsqueeze(1)
        self.log_q = (sums / counts.clamp_min(1)).clamp_min(self.eps).log()

    def batch_mutual_information(self, phi_f: Tensor, phi_x: Tensor) -> Tensor:
        """Plug-in I(a; b) of the soft joint p(a, b) = 1/B sum_i phi_f[i, a] phi_x[i, b]: [B, k], [B, k_X] -> []."""
        joint = phi_f.t() @ phi_x / phi_f.shape[0]  # [k, k_X], sums to 1
        log_joint = joint.clamp_min(self.eps).log()
        log_pa = joint.sum(1, keepdim=True).clamp_min(self.eps).log()
        log_pb = joint.sum(0, keepdim=True).clamp_min(self.eps).log()
        return (joint * (log_joint - log_pa - log_pb)).sum()

    def forward(self, features_f: Tensor, features_x: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The bound for a batch: ``features_f`` [B, ...], ``features_x`` [B, ...], ``labels`` [B].

        Returns ``{"ixf": first term, "iyf": second term (with its minus sign), "total": their sum}`` (nats).
        """
        if self.feature_centroids is None:
            raise RuntimeError("InformationBottleneck: call refresh() before computing the loss")
        phi_f = self.log_phi(features_f, self.feature_centroids).exp()  # [B, k]
        log_phi_x = self.log_phi(features_x, self.input_centroids)  # [B, k_X]
        if self.ixf == "authors":
            ixf = torch.einsum("ia,ib->i", phi_f, log_phi_x.exp() * log_phi_x).mean()
        else:
            ixf = self.batch_mutual_information(phi_f, log_phi_x.exp())
        iyf = -(phi_f * self.log_q[labels.long()]).sum(1).mean()
        return {"ixf": ixf, "iyf": iyf, "total": ixf + iyf}
