"""``mediamirror find``: the catalog search of ``GET /api/v1/search`` on the command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click


def register(
    cli: click.Group, pass_ctx: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Add ``find`` to the ``mediamirror`` group."""

    @cli.command("find")
    @click.argument("text", default="")
    @click.option(
        "--type",
        "type_",
        metavar="TYPE",
        help="video, image-sequence, large-image, dataset or folder.",
    )
    @click.option("--status", metavar="STATUS", help="ready, pending, error, new, present, empty.")
    @click.option("--source", metavar="NAME", help="Only this source's folders.")
    @click.option(
        "--processor-state",
        metavar="[PROCESSOR:]STATE",
        help="A processor's state: success, error, queued, running, canceled.",
    )
    @click.option(
        "--meta", multiple=True, metavar="KEY:VALUE", help="Metadata equals (repeatable)."
    )
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
    @click.option("--offset", default=0, show_default=True, type=click.IntRange(0))
    @click.option("--json", "as_json", is_flag=True, help="A JSON list of the hits.")
    @pass_ctx
    def find(
        obj: Any,
        text: str,
        type_: str | None,
        status: str | None,
        source: str | None,
        processor_state: str | None,
        meta: tuple[str, ...],
        limit: int,
        offset: int,
        as_json: bool,
    ) -> None:
        """Find folders and datasets whose name or path contains TEXT (every word of it),
        best matches first. TEXT may be empty when a filter is given."""
        from mediamirror.catalog.search import search
        from mediamirror.web.thumbs import thumbnail_url

        page = search(
            obj.catalog,
            text,
            type=type_,
            status=status,
            source=source,
            processor_state=processor_state,
            meta=list(meta),
            limit=limit,
            offset=offset,
        )
        body = page.as_dict(thumbnail_url)
        if as_json:
            click.echo(json.dumps(body["results"], ensure_ascii=False, indent=1))
            return
        for hit in body["results"]:
            kind = hit["type"] or "folder"
            state = "" if hit["state"] == "present" else f" ({hit['state']})"
            click.echo(f"{hit['path']}  [{kind}] {hit['status'] or '-'}{state}")
        shown = len(body["results"])
        if not shown:
            click.echo("(no match)", err=True)
        elif page.total > offset + shown:
            more = page.total - offset - shown
            click.echo(f"... {more} more (--offset {offset + shown})", err=True)
