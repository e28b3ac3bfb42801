"""``allinone-ir weights [PATTERN] | download NAME | import NAME FILE``: the official pretrained weights."""

from __future__ import annotations

import argparse

from ..errors import UsageError

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``weights`` sub-command."""
    p = subparsers.add_parser(
        "weights",
        help="list, download or import the official pretrained weights",
        description="Without an action: list the registered weights (those matching PATTERN). "
        "$ALLINONE_IR_MIRROR=BASE_URL fetches BASE_URL/<name>/<file> instead of the sources.",
    )
    p.add_argument(
        "action", nargs="?", default="list", help="list [PATTERN] (default), download NAME, import NAME FILE"
    )
    p.add_argument("args", nargs="*", help="PATTERN, NAME or NAME FILE")
    p.add_argument("--cache-dir", help="cache folder (default: $ALLINONE_IR_CACHE or the torch hub dir)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    action, rest = args.action, list(args.args)
    if action not in ("list", "download", "import"):  # `weights PATTERN`
        action, rest = "list", [action, *rest]
    if action == "list":
        if len(rest) > 1:
            raise UsageError(f"weights list takes at most one pattern, got {' '.join(rest)}")
        return _list(rest[0] if rest else None, args.cache_dir)
    from ..weights import download_weights, import_weights

    if action == "download":
        if len(rest) != 1:
            raise UsageError("usage: allinone-ir weights download NAME")
        folder = download_weights(rest[0], cache_dir=args.cache_dir, progress=not args.quiet)
    else:
        if len(rest) != 2:
            raise UsageError("usage: allinone-ir weights import NAME FILE")
        folder = import_weights(rest[0], rest[1], cache_dir=args.cache_dir)
    print(f"{rest[0]}: verified and converted in {folder}")
    print(f"use it: allinone-ir restore --weights {rest[0]} INPUT --out OUTPUT")
    return 0


def _list(pattern: str | None, directory: str | None) -> int:
    from ..models._weights import get_weights, list_pretrained, weights_notes
    from ..weights import CACHE_ENV, MIRROR_ENV, cache_dir, cached_state

    names = list_pretrained(pattern)
    if not names:
        raise UsageError(
            f"no pretrained weights match {pattern!r}; the names are {', '.join(list_pretrained())}"
        )
    entries = {name: get_weights(name) for name in names}
    rows = [("name", "architecture", "params", "size", "tasks", "cached", "license")]
    for name, e in entries.items():
        state = cached_state(name, directory)
        cached = {"converted": "yes", "file": "file", "no": "no" if e.downloadable else "manual"}[state]
        params = "-" if e.num_params is None else f"{e.num_params / 1e6:.2f}M"
        size = "-" if e.size is None else f"{e.size / 2**20:.1f} MiB"
        rows.append((name, e.arch, params, size, "+".join(e.tasks), cached, e.license.split(" (")[0]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print()
    for name, e in entries.items():
        if e.reported:
            print(f"{name}: {'; '.join(e.reported)} ({e.protocol})")
    for family, note in weights_notes().items():
        print(f"{family}: {note}")
    print(
        f"cache: {cache_dir(directory)} (set {CACHE_ENV} to change; {MIRROR_ENV}=BASE_URL fetches from a mirror)"
    )
    print(
        "cached: yes = ready; manual = Google Drive / a page only: `allinone-ir weights download NAME` says how"
    )
    return 0
