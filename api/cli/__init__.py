"""The `vlsearch` command: index folders, search them by text or image, and look after the library. Each command
lives in a module of its own; this one builds the app and registers them, in the order `--help` lists them."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.logging import RichHandler

from vlsearch.api.cli.ask import ask
from vlsearch.api.cli.caption import caption
from vlsearch.api.cli.duplicates import duplicates
from vlsearch.api.cli.evaluate import evaluate
from vlsearch.api.cli.index import index
from vlsearch.api.cli.library import db_upgrade, reindex, status
from vlsearch.api.cli.models import models_list, models_pull
from vlsearch.api.cli.output import err
from vlsearch.api.cli.products import import_products, similar_products
from vlsearch.api.cli.search import search, similar
from vlsearch.api.cli.serve import serve
from vlsearch.api.cli.tags import add_vocabulary, list_vocabularies, remove_vocabulary_command, run_tags, show_tags
from vlsearch.api.cli.transfer import export_library, import_library

app = typer.Typer(
    help="Self-hosted multimodal image search: index photo folders, then find images by words or by other images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Library schema maintenance.", no_args_is_help=True)
products_app = typer.Typer(help="Product catalogues: import one (its rows become products, its pictures indexed "
                            "images), find products like a product.", no_args_is_help=True)
models_app = typer.Typer(help="The models vlsearch embeds, captions and answers with; fetching their weights.",
                         no_args_is_help=True)
tags_app = typer.Typer(help="Tags: labels from a vocabulary (the default one, or your own) scored against each "
                        "image's stored vector; search with --tag.", no_args_is_help=True)
app.add_typer(products_app, name="products")
app.add_typer(tags_app, name="tags")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")


class ExplainedErrors(logging.Filter):
    """A core log line that carries an error (a fallback: "the weights of X are not here; falling back to Y") reads
    in the CLI's words, with what to change, as the error itself would."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, Exception) for a in record.args):
            from vlsearch.api.wording import explain  # only then: it imports the models' packages

            record.args = tuple(explain(a) if isinstance(a, Exception) else a for a in record.args)
        return True


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False) -> None:
    handler = RichHandler(console=err, show_path=False, show_time=False)
    handler.addFilter(ExplainedErrors())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", handlers=[handler])
    for noisy in ("alembic", "faiss", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("root").setLevel(logging.WARNING)


for command in (index, search, similar, caption, ask, duplicates, status, reindex, serve):
    app.command()(command)
app.command("eval")(evaluate)
app.command("export")(export_library)
app.command("import")(import_library)
products_app.command("import")(import_products)
products_app.command("similar")(similar_products)
tags_app.command("run")(run_tags)
tags_app.command("vocab")(add_vocabulary)
tags_app.command("list")(list_vocabularies)
tags_app.command("show")(show_tags)
tags_app.command("remove")(remove_vocabulary_command)
db_app.command("upgrade")(db_upgrade)
models_app.command("list")(models_list)
models_app.command("pull")(models_pull)

__all__ = ["app"]
