"""Losses: pure functions first, thin ``nn.Module`` wrappers second, one file per family."""

from contrastlab.losses.info_nce import NTXentLoss, nt_xent

__all__ = ["NTXentLoss", "nt_xent"]
