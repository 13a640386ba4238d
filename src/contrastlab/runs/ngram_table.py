"""The n-gram table in a checkpoint: only the rows training touched, the rest regenerated.

The bag-of-n-grams encoder's table has ``buckets`` x ``dim`` rows (2^18 x 512 float32: 512 MiB;
its SparseAdam moments would add twice that). A row gets a gradient only when one of a batch's
sentences holds its bucket, and a batch's sentences are training sentences, so every row outside
the buckets of the training text is still its initialisation, which
:func:`contrastlab.models.ngram_encoder.initial_table` regenerates from the seed; its Adam moments
are still zero (SparseAdam updates only the rows of a gradient). A checkpoint therefore holds::

    ngram_table: {seed, buckets, dim, init_std, init_digest,
                  rows (K,) int64: the buckets of the training text, sorted,
                  values (K, dim) float32: the table's rows there}
    optimizer:   {sparse_adam: SparseAdam's state_dict with exp_avg and exp_avg_sq cut to rows}

Loading regenerates the initial table, checks its BLAKE2b digest against ``init_digest`` (a torch
whose generator draws other numbers is refused rather than giving a silently different encoder)
and writes the stored rows over it. The rebuilt table and moments equal the trained ones bit for
bit (tests/text/test_ngram_checkpoint.py); float32 throughout, so a resumed run is exact.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

from contrastlab.errors import CheckpointError
from contrastlab.models.ngram_encoder import NgramEncoder

#: the table's key in the state dict of a SimCSE method around an n-gram encoder
TABLE_KEY = "backbone.table.weight"


def table_digest(table: Tensor) -> str:
    """BLAKE2b (128 bits) of the table's float32 bytes."""
    data = table.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.blake2b(data.data, digest_size=16).hexdigest()


def touched_rows(*ids: Tensor) -> Tensor:
    """The sorted distinct buckets of the training text (every id a batch can hold)."""
    return torch.unique(torch.cat([i.reshape(-1).to("cpu", torch.int64) for i in ids]))


def pack_table(encoder: NgramEncoder, rows: Tensor, init_digest: str) -> dict[str, Any]:
    """The ``ngram_table`` record: the encoder's table at ``rows`` and how to rebuild the rest."""
    weight = encoder.table.weight.detach()
    return {"seed": encoder.seed, "buckets": int(weight.shape[0]), "dim": int(weight.shape[1]),
            "init_std": float(encoder.settings.init_std), "init_digest": init_digest,
            "rows": rows.clone(), "values": weight[rows.to(weight.device)].cpu()}


def unpack_table(encoder: NgramEncoder, record: dict[str, Any], source: str) -> None:
    """Write the stored rows over ``encoder``'s table, which must be freshly initialised with
    the record's seed (the digest of its initialisation is checked first).

    Raises:
        CheckpointError: another shape or seed, or an initialisation that differs.
    """
    weight = encoder.table.weight
    if [record["buckets"], record["dim"]] != list(weight.shape) or record["seed"] != encoder.seed:
        raise CheckpointError(f"{source}: its n-gram table ({record['buckets']} x "
                              f"{record['dim']}, seed {record['seed']}) does not fit its settings")
    if table_digest(weight) != record["init_digest"]:
        raise CheckpointError(
            f"{source}: the n-gram table's initialisation regenerated from seed "
            f"{record['seed']} differs from the one the run was trained from (this torch, "
            f"{torch.__version__}, draws other numbers), so the rows training never touched "
            "cannot be rebuilt; load the run with the torch version that trained it")
    rows = record["rows"].to(weight.device)
    with torch.no_grad():
        weight.index_copy_(0, rows, record["values"].to(weight.device, weight.dtype))


def pack_sparse_adam(optimizer: torch.optim.Optimizer, rows: Tensor) -> dict[str, Any]:
    """SparseAdam's state dict with its moments cut to ``rows`` (the others are zero)."""
    state = optimizer.state_dict()
    packed: dict[int, dict[str, Any]] = {}
    for key, entry in state["state"].items():
        packed[key] = {name: (value[rows.to(value.device)].cpu()  # indexing copies
                              if name in ("exp_avg", "exp_avg_sq") else value)
                       for name, value in entry.items()}
    return {"state": packed, "param_groups": state["param_groups"]}


def unpack_sparse_adam(optimizer: torch.optim.Optimizer, record: dict[str, Any],
                       rows: Tensor) -> None:
    """Load a :func:`pack_sparse_adam` record: the moments zero outside ``rows``."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for key, entry in record["state"].items():
        full = {}
        for name, value in entry.items():
            if name in ("exp_avg", "exp_avg_sq"):
                moment = torch.zeros(params[int(key)].shape, dtype=value.dtype)
                value = moment.index_copy_(0, rows, value)
            full[name] = value
        state[key] = full
    optimizer.load_state_dict({"state": state, "param_groups": record["param_groups"]})


__all__ = ["TABLE_KEY", "pack_sparse_adam", "pack_table", "table_digest", "touched_rows",
           "unpack_sparse_adam", "unpack_table"]
