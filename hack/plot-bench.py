"""Draws the operator's scale curve from the benchmark's results.

Reads target/bench/results.json (written by benches/operator) and plots, against the number of
finished builds in the namespace, the operator's resident memory (settled, and the highest seen in
the idle window) and its time to /readyz after a restart. Run by hack/bench.sh in its virtualenv:

    plot-bench.py RESULTS_JSON OUTPUT_PNG
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)


def main(results_path: str, out_path: str) -> int:
    with open(results_path, encoding="utf-8") as f:
        results = json.load(f)
    points = sorted(results.get("scale", {}).get("points", []), key=lambda p: p["builds"])
    if not points:
        print(f"plot-bench: no scale points in {results_path}; nothing to draw", file=sys.stderr)
        return 1
    builds = [p["builds"] for p in points]
    machine = results.get("machine", {})

    fig, (mem, ready) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    mem.plot(builds, [p["rssSettledMiB"] for p in points], "o-", label="settled (after start-up)")
    mem.plot(builds, [p["rssWindowMaxMiB"] for p in points], "s--", label="highest in the idle window")
    mem.set_title("Operator RSS")
    mem.set_xlabel("finished DatasetBuilds")
    mem.set_ylabel("MiB")
    mem.set_ylim(bottom=0)
    mem.legend()
    mem.grid(alpha=0.3)

    ready.plot(builds, [p["readySeconds"] for p in points], "o-", color="tab:green")
    ready.set_title("Time to /readyz after a restart")
    ready.set_xlabel("finished DatasetBuilds")
    ready.set_ylabel("seconds")
    ready.set_ylim(bottom=0)
    ready.grid(alpha=0.3)

    slope = results["scale"].get("slope", {})
    kib = slope.get("rssKiBPerBuild")
    note = f"{machine.get('nproc', '?')} cores, {machine.get('date', '')}"
    if kib is not None:
        note += f"; slope {kib:.2f} KiB per build"
    fig.suptitle(f"kube-dss scale curve ({note})", fontsize=10)
    fig.savefig(out_path, dpi=110)
    print(f"plot-bench: wrote {out_path}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
