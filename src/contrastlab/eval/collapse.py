"""Collapse alarm: read per-evaluation diagnostics and say, in words, when the embeddings collapse.

Two kinds of collapse, as told apart by the diagnostics of :mod:`contrastlab.eval.diagnostics`:

* **complete collapse**: every image is mapped to (almost) the same point, so the embeddings
  carry no information. Sign: the standard deviation of L2-normalised embeddings, about
  ``1/sqrt(D)`` when they are spread out, falls towards 0 (Chen & He, CVPR 2021, sec. 4.1);
  different images then have cosine similarity near 1.
* **dimensional collapse**: the embeddings vary, but only along a few directions; the covariance
  spectrum has a long tail of (near-)zero eigenvalues (Jing, Vincent, LeCun & Tian, ICLR 2022).
  Sign: the effective rank (RankMe, Garrido et al. 2023) is a small fraction of the dimension.

:class:`CollapseMonitor` raises the alarm once a kind has been seen in ``patience`` evaluations
in a row, in either the projector or the backbone space, and says what usually causes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

COMPLETE = "complete"
DIMENSIONAL = "dimensional"

# What usually causes collapse, by method family (first match wins; named first for both kinds),
# and in general for each kind.
_BY_METHOD = {
    "simsiam": "SimSiam needs both its predictor and the stop-gradient on the target branch; "
               "without either it collapses (Chen & He 2021)",
    "byol": "BYOL needs its predictor and the stop-gradient / momentum target; a momentum "
            "of 1 or no predictor collapses",
    "vicreg": "the variance term is what prevents collapse in VICReg; check its weight",
    "barlow": "the on-diagonal (invariance) and off-diagonal weights of Barlow Twins may be off "
              "(lambda too small)",
    "dino": "DINO needs centring and sharpening of the teacher output (teacher temperature, "
            "centre momentum)",
    "swav": "SwAV's Sinkhorn equipartition must be active (check epsilon / iterations)",
}
_COMPLETE_GENERAL = (
    "a learning rate that is too high (try --lr ten times lower, or more warm-up)",
    "for contrastive losses, a temperature that is too high (SimCLR uses 0.1-0.5) or too few "
    "negatives",
    "a non-contrastive method without its asymmetry (predictor, stop-gradient) or variance term",
)
_DIMENSIONAL_GENERAL = (
    "a projector that is too small or missing (Jing et al. 2022: --projection-dim, "
    "--projection-hidden-dim)",
    "augmentations that are too strong for the data (e.g. --crop-scale with a small minimum)",
    "a learning rate or weight decay that is too high",
    "for contrastive losses, a temperature that is too high",
    "for VICReg / Barlow Twins, a covariance (redundancy-reduction) term that is too weak",
)


@dataclass
class CollapseFinding:
    """One kind of collapse seen in one embedding space at one evaluation."""

    kind: str  # COMPLETE or DIMENSIONAL
    space: str  # "projector", "backbone", ...
    evidence: str  # the numbers behind it, in words


@dataclass
class CollapseAlarm:
    """What :meth:`CollapseMonitor.update` returns when it fires."""

    kind: str
    space: str
    message: str

    def to_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "space": self.space, "message": self.message}


class CollapseMonitor:
    """Watches diagnostics evaluation after evaluation and fires when collapse persists.

    Args:
        threshold_rank: dimensional collapse when the effective rank is below this fraction of
            its maximum ``min(2N, D)`` (``effective_rank_ratio`` < threshold_rank).
        threshold_std: complete collapse when ``normalized_std * sqrt(D)`` (1 when spread out,
            0 when collapsed) is below this.
        patience: evaluations in a row that must show collapse before the alarm fires.
        method: the method's name, to put its usual cause first.
        grace: evaluations in the first ``grace`` share of the schedule are not counted: a
            freshly initialised network maps all images to nearly the same point (SimCLR on
            digits at epoch 3 of 30: std ratio 0.08, mean cosine 0.99 between different images),
            which is not yet a training failure.

    :meth:`update` fires at most once per kind for an unbroken streak of collapsed evaluations
    (a dimensional alarm may be followed by a complete one if it gets worse); a healthy
    evaluation ends the streak.
    """

    def __init__(self, threshold_rank: float = 0.05, threshold_std: float = 0.05,
                 patience: int = 2, method: str | None = None, grace: float = 0.1) -> None:
        if not 0.0 < threshold_rank < 1.0:
            raise ValueError(f"threshold_rank must be in (0, 1), got {threshold_rank}")
        if not 0.0 < threshold_std < 1.0:
            raise ValueError(f"threshold_std must be in (0, 1), got {threshold_std}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if not 0.0 <= grace < 1.0:
            raise ValueError(f"grace must be in [0, 1), got {grace}")
        self.grace = grace
        self.threshold_rank = threshold_rank
        self.threshold_std = threshold_std
        self.patience = patience
        self.method = method
        self.collapsed_streak = 0
        self.complete_streak = 0
        self.streak_epochs: list[int | None] = []
        self.fired: set[str] = set()

    # ---------------------------------------------------------------- one evaluation
    def check_space(self, space: str, diagnostics: dict[str, Any]) -> CollapseFinding | None:
        """The collapse seen in one space's diagnostics (see ``diagnose_embeddings``), if any."""
        dim = diagnostics["dim"]
        std_ratio = diagnostics.get("normalized_std_ratio")
        rank = diagnostics.get("effective_rank")
        rank_ratio = diagnostics.get("effective_rank_ratio")
        if std_ratio is None or rank is None or rank_ratio is None:
            return None  # non-finite embeddings: the trainer reports divergence itself
        negative = diagnostics.get("negative_cosine")
        cosine = "" if negative is None else (
            f"; mean cosine between different images {negative:.3f}")
        if std_ratio < self.threshold_std:
            return CollapseFinding(COMPLETE, space, (
                f"the std of L2-normalised {space} embeddings is "
                f"{diagnostics['normalized_std']:.2g} where spread-out embeddings have about "
                f"1/sqrt({dim}) = {1 / math.sqrt(dim):.2g}{cosine}: (almost) every image gets "
                "the same embedding"))
        if rank_ratio < self.threshold_rank:
            return CollapseFinding(DIMENSIONAL, space, (
                f"the effective rank (RankMe) of the {space} embeddings is {rank:.1f} out of "
                f"{dim} dimensions ({100 * rank_ratio:.1f}% of its maximum, alarm below "
                f"{100 * self.threshold_rank:.0f}%){cosine}: they vary along only a few "
                "directions"))
        return None

    def check(self, diagnostics: dict[str, dict[str, Any]]) -> list[CollapseFinding]:
        """Findings of one evaluation, ``{"projector": {...}, "backbone": {...}}``; complete
        collapse first."""
        findings = [f for space, values in diagnostics.items() if isinstance(values, dict)
                    and "dim" in values and (f := self.check_space(space, values)) is not None]
        return sorted(findings, key=lambda f: f.kind != COMPLETE)

    # ---------------------------------------------------------------- over evaluations
    def update(self, diagnostics: dict[str, dict[str, Any]], epoch: int | None = None,
               progress: float | None = None) -> CollapseAlarm | None:
        """Record one evaluation; return an alarm when a collapse has lasted ``patience``
        evaluations (once per kind and streak), else ``None``. ``progress`` is the share of the
        schedule done (evaluations before ``grace`` are ignored)."""
        if progress is not None and progress < self.grace:
            return None
        findings = self.check(diagnostics)
        if not findings:
            self.collapsed_streak = self.complete_streak = 0
            self.streak_epochs = []
            self.fired = set()
            return None
        self.collapsed_streak += 1
        self.streak_epochs.append(epoch)
        has_complete = findings[0].kind == COMPLETE
        self.complete_streak = self.complete_streak + 1 if has_complete else 0
        if self.collapsed_streak < self.patience:
            return None
        kind = COMPLETE if self.complete_streak >= self.patience else DIMENSIONAL
        if kind in self.fired:
            return None
        self.fired.add(kind)
        shown = [f for f in findings if f.kind == kind] or findings
        return CollapseAlarm(kind, shown[0].space, self._message(kind, shown))

    def _message(self, kind: str, findings: list[CollapseFinding]) -> str:
        epochs = self.streak_epochs[-self.patience:]
        when = ("" if None in epochs else
                " (epoch" + ("s " if len(epochs) > 1 else " ") + ", ".join(map(str, epochs)) + ")")
        evidence = "; ".join(f.evidence for f in findings)
        causes = list(_COMPLETE_GENERAL if kind == COMPLETE else _DIMENSIONAL_GENERAL)
        specific = self._method_cause()
        if specific:
            causes.insert(0, specific)
        streak = f" in {self.patience} evaluations in a row" if self.patience > 1 else ""
        return (f"{kind} collapse{streak}{when}: "
                f"{evidence}. Usual causes: " + "; ".join(causes) + ".")

    def _method_cause(self) -> str | None:
        name = (self.method or "").lower()
        for key, cause in _BY_METHOD.items():
            if key in name:
                return cause
        return None


__all__ = ["COMPLETE", "DIMENSIONAL", "CollapseAlarm", "CollapseFinding", "CollapseMonitor"]
