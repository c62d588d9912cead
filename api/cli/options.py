"""The options and arguments of the commands, as Annotated aliases: a command's signature then reads one line per
parameter. The option's name comes from the parameter's where an alias does not give one (max_pixels:
--max-pixels), so a command's parameter names are part of its interface."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlsearch.api.settings import PLATFORM_LIBRARY, PLATFORM_MODEL_DIR, default_library, default_model_dir

RAY_PANEL = "Distributed (Ray)"

# Shared by several commands
LibraryOpt = Annotated[
    Path,
    typer.Option("--library", "-l", help="Library folder.", default_factory=default_library,
                 show_default=f"$VLSEARCH_LIBRARY, else {PLATFORM_LIBRARY}"),
]
ModelDirOpt = Annotated[
    Path,
    typer.Option("--model-dir", help="Where model weights are cached and looked for; copy it to air-gapped machines.",
                 default_factory=default_model_dir, show_default=f"$VLSEARCH_MODEL_DIR, else {PLATFORM_MODEL_DIR}"),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model preset or ARCH/PRETRAINED (see `vlsearch models list`). "
                 "Default: the library's model, or `auto` for a new library."),
]
WeightsOpt = Annotated[Path | None, typer.Option("--weights", help="A local open_clip checkpoint file.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
PRECISION_HELP = ("What the models compute in: auto (fp16 on a GPU; bf16 on a CPU with AVX512_BF16 or AMX, several "
                  "times faster there; else fp32), fp32 (the reference), bf16 or fp16 (GPU only).")
PrecisionOpt = Annotated[str, typer.Option("--precision", help=PRECISION_HELP)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
CaptionModelOpt = Annotated[
    str | None,
    typer.Option("--caption-model", help="blip-base, blip-large, offline, tiny-random, a BLIP checkpoint folder, or "
                 "auto. Default: the model of the library's captions, else auto (blip-base if its weights are here "
                 "or fetchable, else offline)."),
]
VqaModelOpt = Annotated[
    str, typer.Option("--vqa-model", help="blip-vqa-base, offline (questions about text only), a checkpoint folder, "
                      "or auto (blip-vqa-base if its weights are here or fetchable, else offline).")
]
ItmModelOpt = Annotated[
    str, typer.Option("--itm-model", help="blip-itm-base, a checkpoint folder, or auto (blip-itm-base if its "
                      "weights are here or fetchable).")
]
BeamsOpt = Annotated[int, typer.Option("--beams", min=1, help="Beam search width for captions (1: greedy, fastest).")]
MaxLengthOpt = Annotated[int, typer.Option("--max-length", min=1, help="Longest caption, in tokens.")]
PromptOpt = Annotated[
    str | None, typer.Option("--prompt", help='Text every caption starts with, e.g. "a photo of".')
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per model call.")]
PathFilterOpt = Annotated[str | None, typer.Option("--path", help="Only files under this folder.")]

# index
PathsArg = Annotated[
    list[Path] | None, typer.Argument(help="Folders (walked recursively) and image files.", show_default=False)
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(min=0, help="Decoding processes (0: decode in this process).",
                 show_default="min(4, cores); cores-1 with a GPU"),
]
MaxPixelsOpt = Annotated[int, typer.Option(help="Larger images are skipped as possible decompression bombs.")]
PruneOpt = Annotated[bool, typer.Option(help="Forget files that vanished from the folders indexed.")]
CaptionsOpt = Annotated[bool, typer.Option(help="Caption each image (stored, and searchable by keyword).")]
IndexOcrOpt = Annotated[bool, typer.Option(help="Read the text in each image (searchable by keyword).")]
RayOpt = Annotated[str | None, typer.Option(
    "--ray", metavar="auto|local|ADDRESS", rich_help_panel=RAY_PANEL,
    help="Spread decoding, embedding, captioning and OCR over a Ray cluster: `auto` joins the running cluster "
    "(RAY_ADDRESS, or one started here by `ray start`) or else starts Ray on this machine, `local` starts it on "
    "this machine, ADDRESS joins that cluster (ray://HEAD:10001 or HEAD:6379). Every node must see the files at "
    "the same paths. Results come back in shards of --shard-size files, each merged into the library when "
    "complete: a stopped run keeps its merged shards and the same command resumes.")]
ListsOpt = Annotated[list[Path] | None, typer.Option(
    "--list", metavar="FILE", rich_help_panel=RAY_PANEL,
    help="A Parquet or CSV file listing image files or http(s) URLs to index (its `path` or `url` column, else "
    "its first column); repeatable; needs --ray.")]
ShardSizeOpt = Annotated[int, typer.Option(
    min=1, rich_help_panel=RAY_PANEL, help="Files per shard: the unit that is resumed.")]
ShardsOpt = Annotated[Path | None, typer.Option(
    "--shards", metavar="DIR", rich_help_panel=RAY_PANEL,
    help="Write the shards as Parquet files into DIR and keep them there instead of merging them: "
    "`vlsearch import DIR` merges them later (here or on another machine).")]
ActorsOpt = Annotated[int | None, typer.Option(
    min=1, rich_help_panel=RAY_PANEL, help="Model actors per stage.",
    show_default="one per GPU in the cluster, else 1")]
RayCpusOpt = Annotated[int | None, typer.Option(
    min=1, rich_help_panel=RAY_PANEL, help="CPUs of a Ray instance started on this machine.",
    show_default="all")]

# search, similar
TextArg = Annotated[str | None, typer.Argument(help="What to look for, in words.")]
ImageOpt = Annotated[Path | None, typer.Option("--image", "-i", help="Look for images like this one.")]
NegativesOpt = Annotated[list[str] | None, typer.Option("--not", help="Push results away from this (repeatable).")]
KOpt = Annotated[int, typer.Option("--k", "-k", min=1, help="How many results.")]
MinScoreOpt = Annotated[float | None, typer.Option(
    help="Drop results whose CLIP similarity is below this (in hybrid mode: from the vector ranking only; "
    "word matches stay).")]
AfterOpt = Annotated[str | None, typer.Option(help="Taken on or after this date (YYYY-MM-DD).")]
BeforeOpt = Annotated[str | None, typer.Option(help="Taken before this date.")]
CameraOpt = Annotated[str | None, typer.Option(help="Camera make or model contains this.")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="Only images tagged this (repeatable: all of them; "
                                                  "see `vlsearch tags`).")]
BoxOpt = Annotated[str | None, typer.Option("--box", help="Search with this region of --image only: left,top,right,"
                                          "bottom as fractions, e.g. 0.5,0.6,1,1 for the lower right quarter.")]
GroupOpt = Annotated[str | None, typer.Option("--group", help="product: the results are products (from `vlsearch "
                                             "products import`), each shown by its best-matching image.")]
WhereOpt = Annotated[list[str] | None, typer.Option("--where", help="Only images of products meeting this: "
                                                    "category=shoes, brand!=acme, price<100, color=red|blue "
                                                    "(repeatable; all must hold).")]
SortOpt = Annotated[str, typer.Option(help="score, or date (newest first among the top k).")]
TextWeightOpt = Annotated[float, typer.Option(help="Weight of the text in a combined query.")]
ImageWeightOpt = Annotated[float, typer.Option(help="Weight of the image in a combined query.")]
NotWeightOpt = Annotated[float, typer.Option(help="Weight of each --not term.")]
ModeOpt = Annotated[str, typer.Option(help="vector (CLIP similarity), keyword (words in file names, captions and "
                                           'OCR text; "quoted phrases" match exactly) or hybrid (both, fused).')]
RerankOpt = Annotated[int, typer.Option(min=0, help="Rescore the top N with an image-text matching model "
                                        "(slower, more precise at the top).")]
TargetArg = Annotated[str, typer.Argument(help="An image id from the library, or a path to any image file.")]

# caption
ImagesArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Image files to describe (they need not be indexed). None: caption the library's "
                   "images that lack a caption or OCR text."),
]

# ask
QuestionArg = Annotated[str, typer.Argument(help='A question: about one image with --image, else about the whole '
                                            'library ("which photos show a dog on a beach?").')]
AskImageOpt = Annotated[str | None, typer.Option("--image", "-i", help="An image file, or the id of an indexed "
                                                 "image, to ask about.")]
AskKOpt = Annotated[int, typer.Option("--k", "-k", min=1, help="At most this many images (collection questions).")]
CandidatesOpt = Annotated[int, typer.Option(min=1, help="How many CLIP search results are checked.")]
ThresholdOpt = Annotated[float, typer.Option(min=0.0, max=1.0, help="Keep images whose yes-probability (or match "
                                             "probability) is at least this.")]

# reindex
IndexKindOpt = Annotated[str, typer.Option(
    "--index", help="auto (exact below 100k vectors, IVF above; with --memory the index that fits), flat, ivf, "
    "ivfpq (compressed: 1M vectors in ~150 MB, rescored from SQLite) or hnsw. Approximate kinds are tuned at "
    "build to recall@10 >= 0.95.")]
MemoryOpt = Annotated[str | None, typer.Option(
    "--memory", help="Memory budget of the index, e.g. 512MB, 4GB, 1.5GiB: auto then builds exact search, "
    "IVF-Flat or IVF-PQ with the largest codes that fit (trained on a sample, vectors added in chunks).")]
LatencyOpt = Annotated[float | None, typer.Option(
    "--latency-ms", help="Latency target of one query (ms, on this machine): the search setting is capped "
    "where the recall target would be slower, and the conflict reported.")]
OpqOpt = Annotated[bool, typer.Option("--opq", help="Rotate vectors with OPQ before IVF-PQ codes.")]
QuantizerOpt = Annotated[str, typer.Option(
    "--quantizer", help="Coarse quantizer of an IVF index: flat (exact; ~3 ms a query at 16,384 lists) or hnsw "
    "(a graph: faster adds, but on clustered vectors it picks the wrong lists and needs a much larger nprobe; "
    "see BENCHMARKS.md).")]

# export, import
OutArg = Annotated[Path, typer.Argument(help="Folder to write the part files to (created; must be empty).")]
ExportModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Whose vectors go in the embedding column.",
                                                    show_default="the library's model")]
ThumbnailsOpt = Annotated[bool, typer.Option("--thumbnails", help="Include each image's thumbnail JPEG "
                                             "(~10 KB a row).")]
RowsPerFileOpt = Annotated[int, typer.Option("--rows-per-file", min=1, help="Rows per part file.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Write into a folder that has files: its *.parquet "
                                            "files are deleted first, other files stay.")]
SourcesArg = Annotated[list[Path], typer.Argument(help="Parquet files, or folders of them (read in name order).")]
ImportModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="The model that made the embeddings, for files without vlsearch metadata (written by "
    "other tools): a preset or ARCH/PRETRAINED, as `vlsearch search --model` takes it.")]

# serve: unset options leave the settings' own (environment, TOML file, defaults)
ServeLibraryOpt = Annotated[Path | None, typer.Option("--library", "-l", help="Library folder.",
                                                      show_default="the settings' library")]
ServeModelDirOpt = Annotated[Path | None, typer.Option("--model-dir", help="Where model weights are looked for.",
                                                       show_default="the settings' model_dir")]
HostOpt = Annotated[str | None, typer.Option(help="Address to listen on (0.0.0.0: every interface; set API keys "
                                             "first).", show_default="127.0.0.1")]
PortOpt = Annotated[int | None, typer.Option(help="Port to listen on.", show_default="8000")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file.",
                                                show_default="$VLSEARCH_CONFIG, else ~/.config/vlsearch/config.toml")]
ServeVqaModelOpt = Annotated[str | None, typer.Option("--vqa-model", help="VQA model for /vqa and /ask.",
                                                      show_default="auto")]
ServeItmModelOpt = Annotated[str | None, typer.Option("--itm-model", help="Matching model for rerank and /ask.",
                                                      show_default="auto")]
ServeCaptionsOpt = Annotated[bool | None, typer.Option("--captions/--no-captions", help="Load a caption model.",
                                                       show_default="captions")]
ServeDeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.", show_default="auto")]
ServePrecisionOpt = Annotated[str | None, typer.Option("--precision", help=PRECISION_HELP, show_default="auto")]

# models pull
PullNameArg = Annotated[str, typer.Argument(help="A CLIP preset, ARCH/PRETRAINED, or a BLIP preset (blip-base, "
                                            "blip-large, blip-vqa-base, blip-itm-base).")]
