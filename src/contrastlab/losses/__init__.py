"""Losses: pure functions first, thin ``nn.Module`` wrappers second, one file per family."""

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
from contrastlab.losses.clip import CLIPLoss, SigLIPLoss, clip_loss, siglip_loss
from contrastlab.losses.dcl import DCLLoss, dcl_loss, dclw_loss, dclw_weights
from contrastlab.losses.dino import (
    DINOLoss,
    dino_loss,
    teacher_temperature_at,
    updated_center,
)
from contrastlab.losses.grad_cache import GradCacheOutput, grad_cache_backward
from contrastlab.losses.info_nce import NTXentLoss, nt_xent
from contrastlab.losses.mae import MAELoss, mae_loss, masked_patch_mse, normalized_patch_targets
from contrastlab.losses.moco import (
    MoCoInfoNCELoss,
    MoCoV3Loss,
    in_batch_info_nce,
    moco_info_nce,
    moco_v3_info_nce,
)
from contrastlab.losses.rotation import (
    RotationPredictionLoss,
    rotate_four_ways,
    rotation_prediction_loss,
)
from contrastlab.losses.supcon import SupConLoss, supcon_loss, supcon_loss_views
from contrastlab.losses.swav import (
    SwappedPredictionLoss,
    sinkhorn_knopp,
    swapped_prediction_loss,
)
from contrastlab.losses.tiled import (
    tiled_clip_loss,
    tiled_clip_loss_rows,
    tiled_info_nce,
    tiled_logsumexp,
    tiled_moco_info_nce,
    tiled_nt_xent,
    tiled_nt_xent_rows,
    tiled_supcon,
    tiled_supcon_rows,
)
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
    "normalized_mse", "simsiam_loss",
    "CLIPLoss", "MAELoss", "RotationPredictionLoss", "SigLIPLoss", "clip_loss", "mae_loss",
    "masked_patch_mse", "normalized_patch_targets", "rotate_four_ways", "rotation_prediction_loss",
    "siglip_loss",
    "DINOLoss", "SwappedPredictionLoss", "dino_loss", "sinkhorn_knopp",
    "swapped_prediction_loss", "teacher_temperature_at", "updated_center",
    "NTXentLoss", "nt_xent", "tiled_clip_loss", "tiled_clip_loss_rows", "tiled_info_nce",
    "tiled_logsumexp", "tiled_moco_info_nce", "tiled_nt_xent", "tiled_nt_xent_rows",
    "tiled_supcon", "tiled_supcon_rows", "GradCacheOutput", "grad_cache_backward",
    "BarlowTwinsLoss", "DCLLoss", "NPairLoss", "SupConLoss", "TripletLoss", "VICRegLoss",
    "VICRegTerms", "barlow_twins_loss", "cross_correlation", "dcl_loss", "dclw_loss",
    "dclw_weights", "mine_triplets", "npair_loss", "scaled_off_diagonal_weight",
    "squared_distances", "supcon_loss", "supcon_loss_views", "triplet_loss", "vicreg_loss",
    "vicreg_terms",
]
