"""The one abstraction the trainer knows: a :class:`Method`.

A method is an ``nn.Module`` that owns its encoder, heads, loss and any training state (queues, EMA
teachers, centres, prototypes) as submodules or registered buffers, so checkpoints and DDP see all
of it. The trainer asks it for a loss on a batch of views and tells it when a step starts and
when the optimiser step has been applied; it knows nothing about SimCLR or any other method.

State that must change only after a step that was taken (keys entering MoCo's queue, DINO's
centre) is computed in :meth:`Method.training_step`, returned in :attr:`StepOutput.after_step`
and applied in :meth:`Method.on_step_end`, which the trainer calls with that output only after a
step whose loss and gradients were finite. A skipped step therefore leaves the state as it was,
and nothing is parked on the method between the two calls.

Class attributes tell the trainer what a method needs:

* ``num_views``: augmented global views per image (2 for the two-view methods, 1 for RotNet/MAE).
* ``default_local_crops``: small multi-crop views per image by default (SwAV/DINO: 6).
* ``supports_multi_crop``: whether extra small views (``--num-local-crops``) may be given.
* ``default_backbone``: the backbone the method is trained on when the user names none (no
  flag, YAML key or recipe value): a method that cannot work on the general default (``convnet``)
  declares the kind it needs, e.g. MAE's ``vit-tiny``; None: the general default. A backbone the
  user names is always used (and refused by the method if it cannot work on it).
* ``needs_labels``: the method trains on labels (supervised baseline); SupCon uses them when
  present.
* ``uses_labels``: labels change the loss when present (SupCon); others ignore them.
* ``sync_batch_norm``: under multi-process training (with the ``sync_batchnorm`` setting) the
  trainer replaces the method's batch norms by
  :class:`contrastlab.models.global_batch_norm.GlobalBatchNorm` (statistics of the global batch);
  False for a method that defines its own batch-norm groups (MoCo v2's shuffling BN).
* ``unused_parameters``: some parameters get no gradient on some steps (frozen prototypes,
  DINO's frozen last layer); DistributedDataParallel then searches the graph for them every
  step (``find_unused_parameters``), and leaves their gradients unset as one process would.
* ``supports_grad_cache``: the loss is a function of per-image embeddings of the whole batch
  and the method keeps no state that a forward pass changes (no queue, no EMA teacher), so the
  trainer may compute its gradient with GradCache (``--micro-batch``,
  :mod:`contrastlab.training.micro_batch`). Such a method implements :meth:`Method.embed_views`
  and :meth:`Method.loss_from_embeddings`, and its :meth:`training_step` is their composition.

The trainer calls the module itself, ``method(views, labels)``, which runs :meth:`training_step`
(so that DistributedDataParallel sees the forward pass).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from contrastlab.errors import ConfigError
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone


@dataclass
class StepOutput:
    """What a training step returns: the loss to minimise, detached scalars to log, and the
    tensors the method needs once the optimiser step has been applied (``after_step``: keys for
    a queue, teacher outputs for a centre), which the trainer hands back to
    :meth:`Method.on_step_end` after a successful step. ``after_step`` tensors are detached here.

    Under DDP the module call returns this object unchanged (DDP passes non-tensor outputs
    through), ``after_step`` included.
    """

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    after_step: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.after_step = {name: value.detach() for name, value in self.after_step.items()}


def per_image(z: Tensor, num_views: int) -> Tensor:
    """``(V * n, D)`` embeddings of ``cat(views)`` (view-major) as ``(n, V, D)`` rows per image."""
    return z.unflatten(0, (num_views, -1)).transpose(0, 1)


class Method(nn.Module):
    """Base class of every self-supervised method.

    Subclasses implement :meth:`training_step`, and :meth:`project` when they have a projection
    head; if they keep state that changes between steps (EMA teacher, queue, schedules) they
    update it in :meth:`on_step_end`, from the step's :attr:`StepOutput.after_step` where it
    depends on the batch. ``self.step`` and ``self.progress`` (the share of the
    schedule done, in [0, 1]; over wall time under ``--time-budget``) are set by the trainer
    before every step, for schedules such as teacher temperature warm-up or frozen prototypes.
    """

    name: str = "method"
    #: the method's hyper-parameters (a dataclass declared beside the method)
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    num_views: int = 2
    default_local_crops: int = 0
    default_backbone: str | None = None
    supports_multi_crop: bool = False
    needs_labels: bool = False
    uses_labels: bool = False
    sync_batch_norm: bool = True
    unused_parameters: bool = False
    supports_grad_cache: bool = False

    def __init__(self, backbone: Backbone, settings: MethodSettings | None = None,
                 **overrides: Any) -> None:
        """Keep ``backbone`` and the method's settings: ``settings`` (an instance of the
        method's :attr:`Settings`), changed by ``overrides``, or the defaults changed by
        ``overrides`` (``SimCLR(backbone, temperature=0.2)``)."""
        super().__init__()
        self.settings = self.make_settings(settings, overrides)
        self.backbone = backbone
        self.step = 0
        self.progress = 0.0

    @classmethod
    def make_settings(cls, settings: MethodSettings | None = None,
                      overrides: Mapping[str, Any] | None = None) -> MethodSettings:
        """The method's settings from an instance and/or ``{name: value}`` overrides."""
        if settings is not None and type(settings) is not cls.Settings:
            raise ConfigError(f"method '{cls.name}' takes {cls.Settings.__name__}, got "
                              f"{type(settings).__name__}")
        values = {} if settings is None else settings.to_dict()
        values.update(overrides or {})
        return cls.Settings.from_mapping(values, f"the settings of method '{cls.name}'")

    @classmethod
    def views_per_image(cls, settings: MethodSettings) -> int:
        """Global views per image: the ``num_views`` setting where the method has one
        (SupCon), else the class's :attr:`num_views`."""
        return int(getattr(settings, "num_views", cls.num_views))

    def training_step(self, views: list[Tensor], labels: Tensor | None = None) -> StepOutput:
        """Compute the loss on a batch of augmented views (one tensor per view, same images).

        With multi-crop, ``views`` holds the ``num_views`` global views first, then the local
        (smaller) views.

        A method with ``supports_grad_cache`` need not override it: its step is
        ``loss_from_embeddings(embed_views(views), labels)``, the very functions the GradCache
        path (``--micro-batch``) calls, so the two paths cannot drift apart.
        """
        if self.supports_grad_cache:
            return self.loss_from_embeddings(self.embed_views(views), labels)
        raise NotImplementedError

    def embed_views(self, views: list[Tensor]) -> Tensor:
        """Per-image embeddings of a (micro-)batch: ``(n, num_views, D)``, row i holding the
        embeddings of image i's views. Apart from batch norm in training mode, row i depends on
        image i only, so micro-batches can be embedded separately and concatenated on dim 0
        (GradCache). For methods with ``supports_grad_cache``; the default is :meth:`project`
        of all views in one batch (one forward, batch norm over every view, as SimCLR's
        implementation does)."""
        if not self.supports_grad_cache:
            raise NotImplementedError(f"method '{self.name}' does not support GradCache")
        if len(views) != self.num_views:
            raise ValueError(f"{self.name} expects exactly {self.num_views} views per image, got "
                             f"{len(views)}")
        return per_image(self.project(torch.cat(views, dim=0)), len(views))

    def loss_from_embeddings(self, embeddings: Tensor, labels: Tensor | None) -> StepOutput:
        """The loss of the batch given all its :meth:`embed_views` rows (``(N, views, D)``)."""
        raise NotImplementedError(f"method '{self.name}' does not support GradCache")

    def forward(self, views: list[Tensor], labels: Tensor | None = None) -> StepOutput:
        """``training_step(views, labels)``: the module call the trainer (and DDP) makes."""
        return self.training_step(views, labels)

    def on_step_start(self, step: int, progress: float) -> None:
        """Called before :meth:`training_step`; records the position in the schedule."""
        self.step = step
        self.progress = progress

    def on_step_end(self, step: int, progress: float, output: StepOutput) -> None:
        """Update non-gradient state after a successful optimiser step (EMA, queue, schedules).

        ``output`` is the step's :class:`StepOutput` (its :attr:`~StepOutput.after_step`
        tensors); the trainer does not call this for a skipped (non-finite) step."""

    def encode(self, images: Tensor) -> Tensor:
        """The representation used for evaluation and serving: backbone features."""
        return self.backbone(images)

    def project(self, images: Tensor) -> Tensor:
        """The embedding the loss acts on (projector output); the backbone features when the
        method has no projector."""
        return self.encode(images)

    @property
    def feature_dim(self) -> int:
        return self.backbone.output_dim
