"""Sphinx configuration of nmfsched's documentation (``make docs``)."""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import benchmark_pages  # noqa: E402  (docs/_ext: the benchmarks page from the scripts' JSON)

import nmfsched  # noqa: E402

project = "nmfsched"
author = "the nmfsched developers"
copyright = "2026, the nmfsched developers"
release = version = nmfsched.__version__

extensions = [
    "myst_nb",  # Markdown pages (MyST) and the notebooks with their stored outputs
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

# .rst first: autosummary writes its generated pages (reStructuredText) with the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_ext", "**.ipynb_checkpoints", "benchmarks/*.json"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve, and a broken one is a warning
suppress_warnings = ["myst.header"]  # pages included from the README and theory start at level 2

# The notebooks are rendered with the outputs stored in them; tests/test_notebooks.py executes
# every one and tests/test_docs.py checks that each stored output is from its current code.
nb_execution_mode = "off"

autosummary_generate = True
# a class page documents the members the class defines; scikit-learn's metadata-routing
# setters (made per estimator by scikit-learn, their docstrings pointing into its own docs) are left out
templates_path = ["_templates"]
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# numpydoc's docstring checks for every public name (the API reference's pages); a failing
# check is a warning, and ``make docs`` turns warnings into errors
numpydoc_validation_checks = {"GL06", "GL07", "PR10", "SS01", "SS03", "SS05"}
# module constants carry their type's docstring (``str``, ``int``): their ``#:`` comment is what the page shows
numpydoc_validation_exclude = {r"\.__init__$", r"\.__call__$", r"\.DEFAULT_POLICY$", r"\.N_FEATURES$",
                               r"\.FEATURE_NAMES$", r"\.MAX_LR_BOUND$"}

html_theme = "pydata_sphinx_theme"
html_title = "nmfsched"
html_static_path = []
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "secondary_sidebar_items": ["page-toc"],
}
html_context = {"default_mode": "light"}
html_sidebars = {"index": [], "benchmarks": []}  # the wide tables get the page's width


def setup(app):
    app.connect("builder-inited", lambda app: benchmark_pages.write_pages(DOCS / "benchmarks", DOCS / "_generated"))
