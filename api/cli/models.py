"""`vlsearch models list` and `vlsearch models pull`: the model presets, and fetching their weights."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from vlsearch.api.cli.options import ModelDirOpt, PullNameArg
from vlsearch.api.cli.output import console, fail


def models_list() -> None:
    """The model presets, with what each is for."""
    from vlsearch.encoders import PRESETS

    table = Table("name", "weights", "description", box=None, header_style="bold")
    for p in PRESETS.values():
        weights = f"{p.arch}/{p.pretrained}" if p.kind == "clip" else ("packaged" if p.kind == "offline" else "random")
        table.add_row(p.name, weights, p.description)
    console.print(table)
    console.print("`auto` (the default) uses ViT-B-32 where its weights are present or fetchable, else `offline`.")
    console.print("Any open_clip pair works too: --model ARCH/PRETRAINED, or --model ARCH --weights FILE.\n")
    from vlsearch.captioner import PRESETS as TEXT_PRESETS

    table = Table("caption / VQA / ITM model", "does", "weights", "description", box=None, header_style="bold")
    for p in TEXT_PRESETS.values():
        table.add_row(p.name, ", ".join(p.tasks), p.repo or ("packaged" if p.name == "offline" else "random"),
                      p.description)
    console.print(table)
    console.print("Or a local folder holding a transformers BLIP checkpoint: --caption-model DIR (likewise for "
                  "--vqa-model, --itm-model).")


def models_pull(name: PullNameArg, model_dir: ModelDirOpt) -> None:
    """Download a model's weights (on a connected machine); copy --model-dir to air-gapped ones."""
    from vlsearch.captioner import PRESETS as TEXT_PRESETS
    from vlsearch.captioner import pull as pull_text_model
    from vlsearch.encoders import WeightsUnavailable, pull

    try:
        path = pull_text_model(name, model_dir) if name in TEXT_PRESETS else pull(name, model_dir)
    except (WeightsUnavailable, ValueError) as exc:
        raise fail(exc) from None
    console.print(f"{escape(name)}: weights at {escape(str(path))}")
