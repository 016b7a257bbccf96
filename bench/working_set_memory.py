"""Peak memory and time of the Newton working-set fit of the output layer, against a reference checkout.

Fits ``L1OutputLayer(solver="newton")`` on synthetic in-memory float32 features (n x F, wider than the
working set: the working-set way) in a fresh subprocess per code version, so that each peak RSS
(``ru_maxrss``, minus the process's RSS before the fit) is that fit's own. Prints a table and writes JSON.

    python bench/working_set_memory.py --reference /path/to/old/checkout --json bench/results/FILE.json
"""

import argparse
import json
import os
import subprocess
import sys

_FIT = r"""
import resource, sys, time, json
import numpy as np
sys.path.insert(0, sys.argv[1])
from pipeline import L1OutputLayer
n, f = int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
y = rng.integers(0, 10, n)
B = rng.standard_normal((n, f), dtype=np.float32)
B[:, :200] += 0.5 * y[:, None].astype(np.float32) * rng.standard_normal(200, dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
layer = L1OutputLayer(beta=0.02, tol=1e-3, solver="newton", working_set=1024).fit(B, y)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(seconds=round(seconds, 2), fit_peak_mb=round((peak - before) / 1024, 1),
                      objective=layer.objective(B, y), features_used=int(np.any(layer.coef_ != 0, axis=1).sum()),
                      rounds=int(layer.n_rounds_))))
"""


def measure(checkout, n, n_features):
    output = subprocess.run([sys.executable, "-c", _FIT, checkout, str(n), str(n_features)], check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="a checkout of the previous version")
    parser.add_argument("--n", type=int, default=40000)
    parser.add_argument("--features", type=int, default=3000)
    parser.add_argument("--json")
    args = parser.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = [dict(version=version, n=args.n, features=args.features, **measure(path, args.n, args.features))
            for version, path in (("reference", args.reference), ("this", here))]
    print(f"{'version':<10} {'seconds':>8} {'fit peak MB':>12} {'objective':>14} {'features':>9} {'rounds':>7}")
    for row in rows:
        print(f"{row['version']:<10} {row['seconds']:>8.2f} {row['fit_peak_mb']:>12.1f} {row['objective']:>14.6f} "
              f"{row['features_used']:>9d} {row['rounds']:>7d}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
