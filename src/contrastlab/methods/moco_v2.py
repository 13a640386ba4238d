"""MoCo v2: contrast a query against its momentum-encoded key and a queue of past keys.

He, Fan, Wu, Xie & Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020, Algorithm 1; Chen, Fan, Girshick & He, "Improved Baselines with Momentum Contrastive
Learning", 2020 (v2: MLP head, tau 0.2, stronger augmentation, cosine learning rate)::

    f_k.params = f_q.params                     # initialise the key encoder
    for x in loader:
        x_q, x_k = aug(x), aug(x)
        q = normalize(f_q(x_q))                 # queries, N x C
        k = normalize(f_k(x_k)).detach()        # keys (shuffled BN), no gradient
        l_pos = bmm(q, k)                       # N x 1
        l_neg = mm(q, queue)                    # N x K
        loss = CrossEntropy(cat([l_pos, l_neg]) / tau, labels=0)
        update(f_q)                             # SGD on the query encoder
        f_k.params = m * f_k.params + (1 - m) * f_q.params
        enqueue(queue, k); dequeue(queue)       # newest K keys

Choices made here (see docs/methods.md):

* BatchNorm cannot leak the positive: shuffling BN with ghost groups
  (:mod:`contrastlab.models.shuffle_bn`). Queries run in ``bn_groups`` contiguous groups of the
  batch, keys in groups of a shuffled order in which every key group mixes several query groups;
  under DDP the shuffle spans all ranks (the reference implementation's form with ``bn_groups``
  equal to the number of processes), each rank running its share of the ``bn_groups`` groups of
  the global batch, and the running BN estimates are combined over ranks
  (:mod:`contrastlab.models.ghost_running_stats`), so with ``bn_groups`` a multiple of the number
  of processes training equals one process's. These batch norms stay per group under DDP
  (``sync_batch_norm = False``).
* ``symmetric=False`` is the paper's asymmetric loss. ``symmetric=True`` averages
  ``l(q1, k2)`` and ``l(q2, k1)``, as many reimplementations do, and enqueues the keys of both
  views.
* ``queue_size=0`` removes the queue: each query is contrasted with its key and the other keys
  of the current global batch (MoCo v3's in-batch negatives, without its 2 tau scale), the
  nearest equivalent of MoCo without a queue (``in_batch_info_nce``):
  ``l_i = -log exp(q_i.k_i/tau) / sum_{j in global batch} exp(q_i.k_j/tau)``.
* The queue starts as random unit vectors, as in the reference code, so the number of negatives is
  K from the first step; the step returns its keys (``after_step["keys"]``, every rank's) and
  :meth:`on_step_end` enqueues them after the optimiser step, so the loss always sees the queue
  from before this batch and a skipped step enqueues nothing.
* The key encoder follows the query encoder with momentum ``ema_momentum`` (0.999), optionally
  raised to 1 on a cosine over training (``ema_cosine``).
* Head: ``Linear -> BN -> ReLU -> Linear -> BN`` (SimCLR's head) by default; the paper's head is
  ``Linear -> ReLU -> Linear`` (``head_batch_norm=False``); why the default differs is in
  docs/methods.md (moco-v2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.distributed import rank, world_size
from contrastlab.losses.moco import in_batch_info_nce, moco_info_nce
from contrastlab.methods import settings as common
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead
from contrastlab.models.ghost_running_stats import running_statistics_over_ranks
from contrastlab.models.momentum_teacher import MomentumTeacher
from contrastlab.models.queue import FeatureQueue
from contrastlab.models.shuffle_bn import effective_groups, forward_in_groups, shuffled_forward
from contrastlab.settings import setting


@dataclass
class MoCoV2Settings(MethodSettings):
    """MoCo v2's hyper-parameters."""

    temperature: float = common.temperature(0.2, "MoCo v2")
    projection_dim: int = common.projection_dim(128, "the paper")
    projection_hidden_dim: int = common.projection_hidden_dim(2048, "the paper")
    queue_size: int = common.queue_size(
        65536, "Number K of queued negative keys; 0: no queue, the negatives are the other keys "
        "of the current (global) batch (as MoCo v3).", "the paper")
    ema_momentum: float = common.ema_momentum(0.999, "the paper")
    ema_cosine: bool = common.ema_cosine(False, "the paper")
    symmetric: bool = setting(False, "Symmetrised loss (both views as queries).",
                              source="the paper: asymmetric")
    bn_groups: int = setting(
        4, "Shuffling BN: ghost groups of the global batch (under torchrun a multiple of the "
        "process count trains exactly as one process).", source="here", ge=1)
    head_batch_norm: bool = setting(
        True, "Batch norm in the projection head.",
        source="here: the paper's head has none; without it the head drifted on the small "
        "ConvNets (docs/methods.md)")


class MoCoV2(Method):
    """MoCo v2 with a momentum key encoder, a queue of negatives and shuffling BN (settings:
    :class:`MoCoV2Settings`)."""

    name = "moco-v2"
    Settings = MoCoV2Settings
    sync_batch_norm = False  # its ghost groups are the point: see the module docstring

    def __init__(self, backbone: Backbone, settings: MoCoV2Settings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.temperature = s.temperature
        self.ema_momentum, self.ema_cosine = s.ema_momentum, s.ema_cosine
        self.symmetric = s.symmetric
        self.bn_groups = s.bn_groups
        self.projection_head = ProjectionHead(backbone.output_dim, s.projection_hidden_dim,
                                              s.projection_dim, num_layers=2,
                                              last_batch_norm=s.head_batch_norm,
                                              hidden_batch_norm=s.head_batch_norm)
        self.momentum_teacher = MomentumTeacher(s.ema_momentum, s.ema_cosine)
        self.key_backbone = self.momentum_teacher.copy_of(backbone)
        self.key_projection_head = self.momentum_teacher.copy_of(self.projection_head)
        # queue_size 0: no queue, the other keys of the batch are the negatives
        self.queue = (FeatureQueue(s.queue_size, s.projection_dim, normalize_init=True)
                      if s.queue_size > 0 else None)
        # seeds the key shuffle together with the step; a buffer, so every DDP rank agrees
        self.register_buffer("shuffle_seed", torch.randint(0, 2**31 - 1, (), dtype=torch.long))

    def current_ema_momentum(self) -> float:
        """m at the current progress."""
        return self.momentum_teacher.momentum(self.progress)

    def _query_encoder(self, images: Tensor) -> Tensor:
        return self.projection_head(self.backbone(images))

    def _key_encoder(self, images: Tensor) -> Tensor:
        return self.key_projection_head(self.key_backbone(images))

    def queries(self, images: Tensor) -> Tensor:
        """L2-normalised queries, the batch split into ghost BN groups."""
        groups = self.groups_per_rank(images.shape[0])
        # under DDP the running BN estimates become those of all ranks' groups in turn
        with running_statistics_over_ranks((self.backbone, self.projection_head), groups):
            queries = forward_in_groups(self._query_encoder, images, groups)
        return F.normalize(queries, dim=1)

    def groups_per_rank(self, batch: int) -> int:
        """Ghost BN groups of this rank's ``batch`` samples: its share of ``bn_groups``."""
        return effective_groups(batch, -(-self.bn_groups // world_size()))

    @torch.no_grad()
    def keys(self, images: Tensor, salt: int = 0) -> tuple[Tensor, Tensor]:
        """L2-normalised keys with shuffling BN: (this rank's keys, the global batch's keys)."""
        generator = torch.Generator().manual_seed(
            int(self.shuffle_seed) + 2 * self.step + salt)
        local, everything = shuffled_forward(self._key_encoder, images,
                                             self.groups_per_rank(images.shape[0]), generator)
        return F.normalize(local, dim=1), F.normalize(everything, dim=1)

    def contrast(self, queries: Tensor, keys: Tensor, all_keys: Tensor) -> Tensor:
        """InfoNCE of this rank's queries against their keys and the negatives: the queue from
        before this batch, or, without a queue, the other keys of the global batch
        (``all_keys``, rank-major: this rank's keys start at ``rank * n``)."""
        if self.queue is None:
            return in_batch_info_nce(queries, all_keys, self.temperature,
                                     row_offset=rank() * queries.shape[0], gather=False)
        return moco_info_nce(queries, keys, self.queue.features, self.temperature)

    def training_step(self, views: list[Tensor], labels: Tensor | None = None) -> StepOutput:
        if len(views) != 2:
            raise ValueError(f"MoCo v2 expects exactly 2 views per image, got {len(views)}")
        q1 = self.queries(views[0])
        k2, k2_all = self.keys(views[1], salt=1)
        if not self.symmetric:
            loss = self.contrast(q1, k2, k2_all)
            new_keys = k2_all
        else:
            q2 = self.queries(views[1])
            k1, k1_all = self.keys(views[0], salt=0)
            loss = 0.5 * (self.contrast(q1, k2, k2_all) + self.contrast(q2, k1, k1_all))
            new_keys = torch.cat([k1_all, k2_all])
        after_step = {"keys": new_keys} if self.queue is not None else {}
        return StepOutput(loss=loss, metrics={"ema_momentum": self.current_ema_momentum()},
                          after_step=after_step)

    def on_step_end(self, step: int, progress: float, output: StepOutput) -> None:
        """f_k = m f_k + (1 - m) f_q, then enqueue(queue, k) with the step's keys."""
        self.progress = progress
        self.momentum_teacher.update(progress)
        if self.queue is not None:
            self.queue.enqueue(output.after_step["keys"])

    def project(self, images: Tensor) -> Tensor:
        """The query head's output q = g(f_q(x)) (before normalisation)."""
        return self._query_encoder(images)


__all__ = ["MoCoV2"]
