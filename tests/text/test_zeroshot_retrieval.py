"""Zero-shot prompt ensembling and top-k accuracy; retrieval recall@k on hand-made similarity
matrices."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastlab.errors import ConfigError
from contrastlab.eval.retrieval import recall_at_k, retrieval_recalls
from contrastlab.eval.zeroshot import (
    check_templates,
    class_name,
    topk_accuracy,
    zeroshot_weights,
)


def test_prompt_ensembling_is_the_renormalised_mean_of_normalised_embeddings() -> None:
    table = {"a cat": [3.0, 0.0, 0.0], "the cat": [0.0, 1.0, 0.0],
             "a dog": [0.0, 0.0, 2.0], "the dog": [0.0, 0.0, -5.0]}
    seen: list[str] = []

    def embed(texts: list[str]) -> torch.Tensor:
        seen.extend(texts)
        return torch.tensor([table[t] for t in texts])

    weights = zeroshot_weights(embed, ["cat", "dog"], ["a {}", "the {}"])
    assert seen == ["a cat", "the cat", "a dog", "the dog"]
    # cat: mean of (1,0,0) and (0,1,0) = (.5,.5,0), renormalised; the raw norms (3 vs 1) do not
    # weight the templates
    torch.testing.assert_close(weights[0], torch.tensor([2 ** -0.5, 2 ** -0.5, 0.0]))
    # dog: (0,0,1) and (0,0,-1) cancel: mean 0, normalize leaves 0
    torch.testing.assert_close(weights[1], torch.zeros(3))
    one = zeroshot_weights(embed, ["cat"], ["a {}"])
    torch.testing.assert_close(one, torch.tensor([[1.0, 0.0, 0.0]]))


def test_topk_accuracy() -> None:
    weights = F.normalize(torch.eye(3), dim=1)
    images = torch.tensor([[5.0, 1.0, 0.0], [0.9, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 0.5]])
    labels = torch.tensor([0, 0, 2, 1])
    # predictions 0, 1, 1, 0; ranks of the true class: 1, 2, 2, 3
    assert topk_accuracy(images, labels, weights, ks=(1, 2, 5)) == {1: 0.25, 2: 0.75, 5: 1.0}


def test_templates_and_class_names() -> None:
    assert check_templates(["a photo of a {}."]) == ["a photo of a {}."]
    for bad in ([], ["no slot"], ["{} and {}"]):
        with pytest.raises(ConfigError):
            check_templates(bad)
    assert class_name("golden_retriever") == "golden retriever"
    assert class_name("sea-lion") == "sea lion"


def test_recall_at_k_on_a_hand_made_matrix() -> None:
    similarity = torch.tensor([[0.9, 0.1, 0.5, 0.0],    # relevant 0 ranked 1st
                               [0.8, 0.2, 0.7, 0.6],    # relevant 1 ranked 4th
                               [0.1, 0.3, 0.2, 0.0]])   # relevant 2 ranked 2nd
    relevant = torch.eye(3, 4, dtype=torch.bool)
    assert recall_at_k(similarity, relevant, ks=(1, 2, 3, 4, 10)) == {
        1: 1 / 3, 2: 2 / 3, 3: 2 / 3, 4: 1.0, 10: 1.0}
    several = relevant.clone()
    several[1, 2] = True  # a second relevant item, ranked 2nd
    assert recall_at_k(similarity, several, ks=(1, 2))[2] == 1.0
    with pytest.raises(ValueError, match="same"):
        recall_at_k(similarity, relevant[:2])


def test_retrieval_both_directions_with_several_captions_per_image() -> None:
    images = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    texts = F.normalize(torch.tensor([[1.0, 0.1], [0.2, 1.0], [1.0, 0.3]]), dim=1)
    image_index = torch.tensor([0, 0, 1])  # caption 1 points the wrong way, caption 2 too
    scores = retrieval_recalls(images, texts, image_index, ks=(1, 2))
    # image 0: captions ranked 0, 2, 1: its own first -> hit; image 1: ranked 1 (0.98, image
    # 0's), 2 (0.29, its own), 0 -> miss at 1, hit at 2
    assert scores["image_to_text_R@1"] == pytest.approx(50.0)
    assert scores["image_to_text_R@2"] == pytest.approx(100.0)
    # captions: 0 -> image 0 (hit), 1 -> image 1 (miss), 2 -> image 0 (miss); all hit at 2
    assert scores["text_to_image_R@1"] == pytest.approx(100 / 3)
    assert scores["text_to_image_R@2"] == pytest.approx(100.0)
