"""Execute notebooks in place, full size, and stamp each with a hash of its code (``make notebooks``).

The documentation shows the outputs stored in the notebooks. The stamp says which code made
them: ``tests/test_docs.py`` fails when a code cell changed after the last refresh, so a
stored figure never outlives the code that drew it.

    python docs/_ext/refresh_notebooks.py notebooks/*.ipynb
"""

import hashlib
import os
import sys
import time
from pathlib import Path

STAMP_KEY = "nmfsched"


def code_digest(nb):
    """SHA-256 of a notebook's code cells, in order (outputs and markdown excluded)."""
    digest = hashlib.sha256()
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            digest.update(source.encode() + b"\0")
    return digest.hexdigest()


def refresh(path):
    """Run ``path`` top to bottom in its folder (not in the tests' fast mode) and store the
    outputs and the stamp; returns the seconds it took."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    os.environ.pop("NMFSCHED_FAST", None)  # the kernel inherits this environment
    start = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    nb.metadata[STAMP_KEY] = {"code_sha256": code_digest(nb)}
    nbformat.write(nb, path)
    return time.perf_counter() - start


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: {refresh(name):.0f} s", flush=True)
