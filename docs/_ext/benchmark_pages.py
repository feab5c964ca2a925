"""The benchmarks page's tables and figures, made from the JSON the benchmark scripts write.

``make docs`` calls :func:`write_pages` before Sphinx reads the sources: for every result file
in ``docs/benchmarks/`` it writes a Markdown fragment (the table, with the script, command,
date and machine that produced it) and a figure into ``docs/_generated/``, which
``docs/benchmarks.md`` includes. Nothing on that page is typed by hand.
"""

import json
import statistics


def _ratios(peer):
    """The peer's per-repeat ratios, inf where nmfsched did not reach its error."""
    return [float("inf") if r is None else r for r in peer["ratios"]]


def _ratio_cell(peer):
    """``median [min-max]`` of the peer's ratios, as ``benchmarks/peers.py`` prints it."""
    ratios = _ratios(peer)
    median = statistics.median(ratios)
    if median == float("inf"):
        text = "not reached"
    elif len(ratios) == 1:
        text = f"{median:.2f}"
    else:
        high = max(ratios)
        text = f"{median:.2f} [{min(ratios):.2f}-{'not reached' if high == float('inf') else f'{high:.2f}'}]"
    return text


def provenance(report):
    """One line: what produced ``report``, when and on what."""
    machine = report["machine"]
    versions = ", ".join(f"{name} {v}" for name, v in machine["versions"].items())
    return (f"Produced by `{report['command']}` on {report['date']}: {machine['cpu']}, "
            f"{machine['cores']} cores, {machine['system']}; {versions}.")


def peers_table(report):
    """The Markdown table of ``benchmarks/peers.py --json``: a row per (case, peer), as the
    script prints it."""
    lines = [
        "| data | rank | nmfsched: error, s | peer | peer error | peer s | to the peer's error / peer's time "
        "| defaults reach it |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in report["cases"]:
        ours = case["nmfsched"]
        head = [case["name"], str(case["rank"]), f"{ours['error']:.5f}, {ours['seconds']:.2f} s"]
        for i, peer in enumerate(case["peers"]):
            cells = (head if i == 0 else ["", "", ""]) + [
                peer["peer"], f"{peer['error']:.5f}", f"{peer['seconds']:.2f}", _ratio_cell(peer),
                "yes" if peer["defaults_reach"] else "no",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    pairs = [p for case in report["cases"] for p in case["peers"]]
    within = sum(statistics.median(_ratios(p)) <= 0.5 for p in pairs)
    reach = sum(p["defaults_reach"] for p in pairs)
    summary = (
        f"To each peer's error (within {report['tolerance']:.1%}) in at most half the peer's time: "
        f"{within} of {len(pairs)} (case, peer) pairs, by the median of {report['repeats']} run(s). "
        f"nmfsched's default run stops at or below the peer's error: {reach} of {len(pairs)}."
    )
    return "\n".join(lines), summary


def peers_figure(report, path):
    """Every case's error-against-time curve of nmfsched (``tol=0``) with the peers' final points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    cases = report["cases"]
    cols = 2
    rows = -(-len(cases) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(10, 2.6 * rows), squeeze=False)
    markers = "osD^v<>ph*"
    for ax, case in zip(axes.flat, cases):
        curve = case["curve"]
        ax.plot(curve["seconds"], curve["rel_error"], color="black", lw=1.5, label="nmfsched (tol=0)")
        for i, peer in enumerate(case["peers"]):
            ax.plot(peer["seconds"], peer["error"], markers[i % len(markers)], ms=6, label=peer["peer"])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{case['name']} (rank {case['rank']})", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes.flat[len(cases):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(7, len(labels)), fontsize=8, frameon=False)
    fig.supxlabel("seconds from the start of fit", fontsize=9)
    fig.supylabel("relative error ||X - WH|| / ||X||", fontsize=9)
    fig.tight_layout(rect=(0.02, 0.02, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def schedules_table(report):
    """The Markdown table of ``benchmarks/schedulers.py --json``: the reference against each
    baseline, with the share of pairs in which the two ended within the tie of each other
    (from every run's final loss)."""
    ref, tie = report["reference"], report["tie"]
    finals = report["final_losses"].values()
    lines = [f"| baseline | final loss: {ref} <= | final loss: {ref} <= (1 + {tie:g}) x | within {tie:.1%} of "
             f"{ref} (a tie) | epochs to target: {ref} <= | time to target: {ref} <= | mean final loss / {ref}'s |",
             "|---|---|---|---|---|---|---|"]
    for base, r in report["rows"].items():
        ties = sum(abs(f[base] / f[ref] - 1) <= tie for f in finals) / len(finals)
        lines.append(f"| {base} | {r['final']:.0%} | {r['final_tie']:.0%} | {ties:.0%} | {r['epochs']:.0%} "
                     f"| {r['time']:.0%} | {r['mean_ratio']:.4f} |")
    summary = (
        f"{report['pairs']} (problem, seed) pairs, {report['epochs']} epochs each on a fixed batch of "
        f"{report['batch']['batch_size']} rows, every scheduler under the stability guard. In "
        f"{report['all_tied']} of {report['pairs']} pairs all {len(report['rows']) + 1} schedulers ended within "
        f"{tie:.1%} of the best final loss."
    )
    return "\n".join(lines), summary


def write_pages(results, out):
    """Write ``out/<name>.md`` (and figures) for each ``results/<name>.json`` that has a writer."""
    out.mkdir(exist_ok=True)
    peers_json = results / "peers.json"
    if peers_json.exists():
        report = json.loads(peers_json.read_text())
        table, summary = peers_table(report)
        peers_figure(report, out / "peers_curves.png")
        (out / "peers.md").write_text(
            f"{provenance(report)}\n\n"
            "Per case and peer: nmfsched's default run (error, seconds), the peer's final error and time, the "
            "time nmfsched needs to come within the tolerance of that error over the peer's time (median "
            "[min-max] over the repeats), and whether nmfsched's default run stops at or below it.\n\n"
            f"{table}\n\n{summary}\n\n"
            "![nmfsched's error against time, with each peer's final error and time]"
            "(/_generated/peers_curves.png)\n"  # from the docs root, whichever page includes it
        )
        rooflines = "\n".join(case["roofline"] for case in report["cases"])
        (out / "peers_roofline.md").write_text(f"```text\n{rooflines}\n```\n")
    schedules_json = results / "schedulers.json"
    if schedules_json.exists():
        report = json.loads(schedules_json.read_text())
        table, summary = schedules_table(report)
        (out / "schedulers.md").write_text(f"{provenance(report)}\n\n{table}\n\n{summary}\n")
