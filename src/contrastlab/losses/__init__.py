"""Losses: pure functions first, thin ``nn.Module`` wrappers second, one file per family.

Each family's function is the whole loss: it picks the direct or the tiled (memory-efficient,
exact) form itself (``chunk_size``: None chooses automatically) and, with ``gather=True`` (the
default), contrasts with every process's embeddings when ``torch.distributed`` is initialised
with several processes, and is the plain loss otherwise. The ``*_rows`` functions are the
per-process form for given columns (what gathering gives), used by the tests to simulate ranks.
``tiled.py`` holds the shared log-sum-exp kernel, ``checks.py`` the shared argument checks.
"""

from contrastlab.losses.barlow_twins import (
    BarlowTwinsLoss,
    barlow_twins_loss,
    cross_correlation,
    scaled_off_diagonal_weight,
)
from contrastlab.losses.byol import (
    BYOLLoss,
    SimSiamLoss,
    byol_loss,
    negative_cosine,
    normalized_mse,
    simsiam_loss,
)
from contrastlab.losses.clip import CLIPLoss, SigLIPLoss, clip_loss, clip_loss_rows, siglip_loss
from contrastlab.losses.cross_view import cross_view_cross_entropy
from contrastlab.losses.dcl import DCLLoss, dcl_loss, dclw_loss, dclw_weights
from contrastlab.losses.dino import (
    DINOLoss,
    dino_loss,
    teacher_temperature_at,
    updated_center,
)
from contrastlab.losses.grad_cache import GradCacheOutput, grad_cache_backward
from contrastlab.losses.info_nce import (
    NTXentLoss,
    info_nce_loss,
    nt_xent,
    nt_xent_rows,
    tiled_nt_xent,
)
from contrastlab.losses.mae import MAELoss, mae_loss, masked_patch_mse, normalized_patch_targets
from contrastlab.losses.moco import (
    MoCoInfoNCELoss,
    MoCoV3Loss,
    in_batch_info_nce,
    moco_info_nce,
    moco_v3_info_nce,
    queue_info_nce,
)
from contrastlab.losses.rotation import (
    RotationPredictionLoss,
    rotate_four_ways,
    rotation_prediction_loss,
)
from contrastlab.losses.supcon import SupConLoss, supcon_loss, supcon_loss_views, supcon_rows
from contrastlab.losses.swav import (
    SwappedPredictionLoss,
    sinkhorn_knopp,
    swapped_prediction_loss,
)
from contrastlab.losses.tiled import logsumexp_over_columns, tiled_logsumexp
from contrastlab.losses.triplet import (
    NPairLoss,
    TripletLoss,
    mine_triplets,
    npair_loss,
    squared_distances,
    triplet_loss,
)
from contrastlab.losses.vicreg import VICRegLoss, VICRegTerms, vicreg_loss, vicreg_terms

__all__ = [
    "BYOLLoss", "MoCoInfoNCELoss", "MoCoV3Loss", "SimSiamLoss", "byol_loss",
    "in_batch_info_nce", "moco_info_nce", "moco_v3_info_nce", "negative_cosine",
    "normalized_mse", "queue_info_nce", "simsiam_loss",
    "CLIPLoss", "MAELoss", "RotationPredictionLoss", "SigLIPLoss", "clip_loss", "clip_loss_rows",
    "mae_loss", "masked_patch_mse", "normalized_patch_targets", "rotate_four_ways",
    "rotation_prediction_loss", "siglip_loss",
    "DINOLoss", "SwappedPredictionLoss", "cross_view_cross_entropy", "dino_loss",
    "sinkhorn_knopp", "swapped_prediction_loss", "teacher_temperature_at", "updated_center",
    "NTXentLoss", "info_nce_loss", "logsumexp_over_columns", "nt_xent", "nt_xent_rows",
    "tiled_logsumexp", "tiled_nt_xent", "GradCacheOutput", "grad_cache_backward",
    "BarlowTwinsLoss", "DCLLoss", "NPairLoss", "SupConLoss", "TripletLoss", "VICRegLoss",
    "VICRegTerms", "barlow_twins_loss", "cross_correlation", "dcl_loss", "dclw_loss",
    "dclw_weights", "mine_triplets", "npair_loss", "scaled_off_diagonal_weight",
    "squared_distances", "supcon_loss", "supcon_loss_views", "supcon_rows", "triplet_loss",
    "vicreg_loss", "vicreg_terms",
]
