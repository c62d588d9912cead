"""`vlsearch serve`: the web page and the HTTP API, with every model loaded once at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from vlsearch.api.cli.loading import HOOKS, setting_up
from vlsearch.api.cli.options import (
    CaptionModelOpt,
    ConfigOpt,
    HostOpt,
    ModelOpt,
    PortOpt,
    ServeCaptionsOpt,
    ServeDeviceOpt,
    ServeItmModelOpt,
    ServeLibraryOpt,
    ServeModelDirOpt,
    ServePrecisionOpt,
    ServeVqaModelOpt,
)
from vlsearch.api.cli.output import console, err, fail
from vlsearch.api.memory import limit_malloc_arenas

if TYPE_CHECKING:
    from vlsearch.api.settings import Settings

def serve(
    library: ServeLibraryOpt = None,
    model_dir: ServeModelDirOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    caption_model: CaptionModelOpt = None,
    vqa_model: ServeVqaModelOpt = None,
    itm_model: ServeItmModelOpt = None,
    captions: ServeCaptionsOpt = None,
    device: ServeDeviceOpt = None,
    precision: ServePrecisionOpt = None,
) -> None:
    """Serve the web page and the HTTP API (OpenAPI docs at /docs).

    Settings come from these options, then VLSEARCH_* environment variables, then the TOML file (see the README:
    API keys, index_roots for POST /index, upload limits, CORS). Reads are open; indexing and deleting need an
    API key."""
    import uvicorn

    from vlsearch.api.app import create_app
    from vlsearch.api.settings import SettingsError, load_settings, unknown_environment
    from vlsearch.api.wiring import build_service

    for name in unknown_environment():
        err.print(f"[yellow]warning:[/] {escape(name)} is not a vlsearch setting and is ignored (see `vlsearch serve "
                  "--help` and the README's settings table for the names).", highlight=False)
    try:
        settings = load_settings(config, library=library, model_dir=model_dir, host=host, port=port, model=model,
                                 caption_model=caption_model, vqa_model=vqa_model, itm_model=itm_model,
                                 captions=captions, device=device, precision=precision)
    except SettingsError as exc:
        raise fail(exc) from None
    limit_malloc_arenas()
    with setting_up():
        service = build_service(settings, HOOKS)
    warn_if_exposed(settings)
    url = f"http://{settings.host}:{settings.port}/"
    console.print(f"vlsearch serving {escape(str(service.library.root))} at {escape(url)}  (API docs: {escape(url)}"
                  "docs; Ctrl-C stops)", highlight=False)
    uvicorn.run(create_app(service), host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=5)


def warn_if_exposed(settings: Settings) -> None:
    """Serving beyond this machine with reads (or everything) open is allowed, but said out loud."""
    from vlsearch.api.security import is_loopback

    if is_loopback(settings.host):
        return
    if not settings.api_keys:
        err.print(f"[bold red]WARNING: serving on {escape(settings.host)} with no API key configured.[/] Anyone "
                  "who can reach this port can search and read every indexed image; indexing and deleting are "
                  "refused until VLSEARCH_API_KEYS is set. Set keys and VLSEARCH_AUTH_READS=true to close "
                  "reads too.", highlight=False)
    elif not settings.auth_reads:
        err.print(f"[yellow]warning:[/] serving on {escape(settings.host)}: reads need no key (set "
                  "VLSEARCH_AUTH_READS=true to require one).", highlight=False)
