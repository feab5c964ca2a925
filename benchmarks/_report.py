"""What the benchmark scripts' ``--json`` files share: the command, the date and the machine."""

import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def machine_description():
    """What produced a result: the CPU, its cores, and the versions of the libraries timed."""
    import sklearn

    versions = {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__}
    with contextlib.suppress(ImportError):
        import torch

        versions["torch"] = torch.__version__
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.system(), "versions": versions}


def write_report(path, script, argv, **payload):
    """Write ``payload`` to ``path`` as JSON with the script, its command line, the date and the machine."""
    command = " ".join(["python", script, *(sys.argv[1:] if argv is None else argv)])
    report = {"script": script, "command": command, "date": time.strftime("%Y-%m-%d"),
              "machine": machine_description(), **payload}
    Path(path).write_text(json.dumps(report, indent=1) + "\n")
