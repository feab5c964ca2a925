"""The README says what the code does: its example runs, its commands exist, and it stays short
(the documentation is in docs/, checked by test_docs.py)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_fits_on_a_screen_or_two():
    assert len(README.read_bytes()) <= 10 * 1024


def test_readme_quickstart_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    model = namespace["model"]
    assert namespace["W"].shape == (1797, 16) and namespace["H"].shape == (16, 64)
    assert model.stability_certificate_["descent"] and model.stability_certificate_["all_losses_finite"]


def test_readme_make_targets_exist():
    targets = set(re.findall(r"^make (\w[\w-]*)", README.read_text(), flags=re.M))
    targets |= set(re.findall(r"`make (\w[\w-]*)`", README.read_text()))
    makefile = (ROOT / "Makefile").read_text()
    assert {"demo", "test", "docs"} <= targets
    assert all(re.search(rf"^{t}:", makefile, flags=re.M) for t in targets)


def test_readme_commands_are_the_cli_s():
    from nmfsched.cli import build_parser

    parser = build_parser()
    for line in re.findall(r"`(nmfsched [^`]+)`", README.read_text()):
        parser.parse_args(line.split()[1:])  # a usage error exits
