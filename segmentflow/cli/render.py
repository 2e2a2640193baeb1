"""Rich renderings shared by the CLI commands."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def populations_table(populations: dict[str, dict[str, int]], title: str = "Segments") -> Table:
    """A table of customers per value per dimension."""
    table = Table(title=title)
    table.add_column("dimension")
    table.add_column("segment")
    table.add_column("customers", justify="right")
    for dim in sorted(populations):
        for value, count in sorted(populations[dim].items(), key=lambda kv: -kv[1]):
            table.add_row(dim, value, f"{count:,}")
    return table


def change_line(change: dict[str, Any]) -> str:
    """One change event as a short rich-markup line."""
    data = change.get("data", {})
    cause = data.get("cause", {}) or {}
    via = "time" if cause.get("kind") == "time" else f"event {cause.get('event_id')}"
    return (
        f"[dim]{change.get('time')}[/dim] [bold]{data.get('customer_id')}[/bold] "
        f"{data.get('dimension')}: {data.get('previous')} -> [green]{data.get('current')}[/green]"
        f" [dim]({via})[/dim]"
    )
