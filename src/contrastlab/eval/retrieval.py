r"""Image-text retrieval: recall at k in both directions.

The standard protocol of CLIP (Radford et al. 2021, Sec. 3.1.4 and Table 13) on Flickr30k and
MS-COCO: every image and every caption of the test pairs is embedded by the frozen towers and
L2-normalised; similarities are cosines :math:`s_{ij} = x_i^\top y_j`.

* image-to-text R@k: the share of images for which at least one of their captions is among the
  k captions most similar to the image;
* text-to-image R@k: the share of captions whose image is among the k images most similar to the
  caption.

.. math::

    R@k = \frac{1}{|Q|} \sum_{q \in Q} \mathbb{1}\big[\mathrm{top}_k(s_{q\cdot}) \cap P(q)
          \neq \emptyset\big]

with :math:`P(q)` the relevant items of query q. Reported x 100 for k = 1, 5, 10. Ties among
similarities are broken by :func:`torch.topk`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from contrastlab.data.captions import load_image_captions
from contrastlab.runs.pair_run import load_pair_run

RECALL_KS = (1, 5, 10)


@torch.no_grad()
def recall_at_k(similarity: Tensor, relevant: Tensor, ks: Sequence[int] = RECALL_KS,
                chunk_size: int = 1024) -> dict[int, float]:
    """``{k: R@k}`` (shares in [0, 1]) of queries (rows of ``similarity``, (Q, G)) whose
    ``relevant`` (bool (Q, G)) items reach the top k; k larger than G counts as G."""
    if similarity.shape != relevant.shape or similarity.ndim != 2:
        raise ValueError(f"similarity {tuple(similarity.shape)} and relevant "
                         f"{tuple(relevant.shape)} must be the same (queries, items) shape")
    if not ks or min(ks) < 1:
        raise ValueError(f"k must be >= 1, got {list(ks)}")
    queries, items = similarity.shape
    depth = min(max(ks), items)
    hits = {k: 0 for k in ks}
    for start in range(0, queries, chunk_size):
        top = similarity[start:start + chunk_size].topk(depth, dim=1).indices
        found = relevant[start:start + chunk_size].gather(1, top)
        for k in ks:
            hits[k] += int(found[:, :min(k, depth)].any(dim=1).sum())
    return {k: hits[k] / max(queries, 1) for k in ks}


def retrieval_recalls(image_embeddings: Tensor, text_embeddings: Tensor, image_index: Tensor,
                      ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Image-to-text and text-to-image R@k (x 100) of M images and N captions (normalised
    embeddings, (M, D) and (N, D)); caption j describes image ``image_index[j]``."""
    similarity = image_embeddings.float() @ text_embeddings.float().t()
    relevant = image_index.view(1, -1) == torch.arange(image_embeddings.shape[0]).view(-1, 1)
    out: dict[str, float] = {}
    for name, sims, rel in (("image_to_text", similarity, relevant),
                            ("text_to_image", similarity.t(), relevant.t())):
        for k, value in recall_at_k(sims, rel, ks).items():
            out[f"{name}_R@{k}"] = 100 * value
    return out


def evaluate_retrieval_run(run: str | Path, data: str | Path, device: torch.device | str = "cpu",
                           skip_bad_rows: bool = False) -> dict[str, Any]:
    """R@1/5/10 of the image-text run ``run`` on the pairs of ``data`` (any pair layout)."""
    loaded = load_pair_run(run, device)
    pairs = load_image_captions(data, loaded.transform.output_size, skip_bad_rows)
    scores: dict[str, Any] = retrieval_recalls(loaded.embed_images(pairs.images),
                                               loaded.embed_texts(pairs.captions),
                                               pairs.image_index)
    scores.update(images=int(pairs.images.shape[0]), captions=len(pairs))
    if pairs.skipped:
        scores["skipped_rows"] = len(pairs.skipped)
    return scores


__all__ = ["RECALL_KS", "evaluate_retrieval_run", "recall_at_k", "retrieval_recalls"]
