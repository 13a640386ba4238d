"""A tiny local Hugging Face model folder for the ``hf:PATH`` tests: a BERT of width 32 (2
layers, 2 heads) and a WordPiece tokenizer trained on a few sentences, written with
``save_pretrained``. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch

SENTENCES = ["a man plays a guitar", "a woman cuts an onion", "two dogs run in a park",
             "a cat sleeps on a sofa", "a child rides a bike", "the sun sets over the sea",
             "a chef cooks pasta", "people dance at a party", "a man plays the piano",
             "a dog runs on the beach"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """``folder`` holding config.json, model.safetensors, tokenizer.json and
    tokenizer_config.json of a tiny BERT (random weights from ``seed``)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(SENTENCES, trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=SPECIALS, show_progress=False))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(name, tokenizer.token_to_id(name)) for name in ("[CLS]", "[SEP]")])
    fast = BertTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def direct_embeddings(folder: Path, texts: list[str], state: dict | None = None,
                      pool: str = "mean") -> torch.Tensor:
    """Sentence embeddings computed with transformers alone: the folder's model (eval mode;
    ``state``: these weights instead of the folder's) and tokenizer, pooled by hand."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    if state is not None:
        model.load_state_dict(state)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    rows = []
    with torch.no_grad():
        for text in texts:  # one at a time: no padding at all
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            out = model(input_ids=ids).last_hidden_state[0]
            rows.append(out[0] if pool == "cls" else out.mean(dim=0))
    return torch.stack(rows)
