"""Write the table of the registered pretrained weights into a Markdown page at build time."""

from __future__ import annotations

from pathlib import Path


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "-"


def write_weights_table(path: str | Path) -> Path:
    """Write one row per registered weights file, then the notes of families without weights, to ``path``."""
    from allinone_ir.models._weights import get_weights, list_pretrained, weights_notes

    lines = [
        "| name | architecture | parameters | size | SHA-256 | tasks | sources | license | reported (protocol) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in list_pretrained():
        e = get_weights(name)
        sources = ", ".join(
            f"[{s.kind}]({s.url})" + (" (fetched by the library)" if s.downloadable else "")
            for s in e.sources
        )
        size = "-" if e.size is None else f"{e.size:,} B"
        sha = "-" if e.sha256 is None else f"`{e.sha256[:12]}…`"
        params = "-" if e.num_params is None else f"{e.num_params:,}"
        reported = " ".join(filter(None, ("; ".join(e.reported), f"({e.protocol})" if e.protocol else "")))
        row = (
            f"`{name}`",
            f"`{e.arch}`",
            params,
            size,
            sha,
            ", ".join(e.tasks),
            sources,
            e.license,
            reported,
        )
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    lines.append("")
    for family, note in weights_notes().items():
        lines.append(f"- {family}: {note}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
