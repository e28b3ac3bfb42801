"""Sphinx configuration of the allinone-ir documentation.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (warnings are errors).
The architecture figures are drawn with matplotlib at build time (``_figures.py``) into
``docs/generated/``; the PyTorch inventory falls back to a small local one when pytorch.org
cannot be reached (CI machines have no internet).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

# sphinx-autodoc-typehints calls an API that Sphinx 9 deprecates; not our warning to fix.
warnings.filterwarnings("ignore", message=".*set_application.*", module="sphinx_autodoc_typehints.*")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _cli_help  # noqa: E402
import _figures  # noqa: E402
import _inventory  # noqa: E402
import _weights_table  # noqa: E402

import allinone_ir  # noqa: E402

project = "allinone-ir"
author = "allinone-ir developers"
copyright = "2026, allinone-ir developers"
release = allinone_ir.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",
    "sphinx_copybutton",
    "myst_parser",
    "_apidoc",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "README.md", "generated/*.md"]

# -- autodoc / autosummary / napoleon --------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = [("Shape", "params_style")]
typehints_fully_qualified = False
always_document_param_types = False
typehints_document_rtype = True

# -- intersphinx ------------------------------------------------------------------------------------
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", (None, _inventory.python_inventory())),
    "torch": ("https://docs.pytorch.org/docs/stable", (None, _inventory.torch_inventory())),
}
intersphinx_timeout = 5

# -- MyST ---------------------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# -- HTML -------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"allinone-ir {release}"
html_theme_options = {"source_repository": "https://github.com/allinone-ir/allinone-ir", "source_branch": "main",
                      "source_directory": "docs/"}  # fmt: skip
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

# Draw the architecture figures before reading the sources.
_figures.draw_all(HERE / "generated" / "figures")
_cli_help.write_cli_reference(HERE / "generated" / "cli_reference.md")
_weights_table.write_weights_table(HERE / "generated" / "weights_table.md")


def _draw_study_figures() -> None:
    """The quality study's bar charts and curves, drawn from the results it recorded (``study_data/``)."""
    import importlib.util

    results = HERE / "study_data" / "results.json"
    spec = importlib.util.spec_from_file_location("study_script", HERE.parent / "benchmarks" / "study.py")
    if not results.is_file() or spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    module.figures_from_results(results, HERE / "generated" / "study")


_draw_study_figures()


def _drop_missing_benchmarks(app, docname: str, source: list[str]) -> None:
    """``benchmarks.md`` is written by the performance work; until it exists, leave it out of the toctree."""
    if docname == "index" and not (HERE / "benchmarks.md").exists():
        source[0] = source[0].replace("\nbenchmarks\n", "\n")


def setup(app) -> None:
    app.connect("source-read", _drop_missing_benchmarks)
