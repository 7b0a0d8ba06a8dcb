"""python -m fastad: a short tour, then the quick benchmark against pure Python.

The tour is the lecture notes' logistic regression:
    z = w x + b,  y = sigmoid(z),  L = (y - t)^2 / 2,  R = w^2 / 2,
    Lreg = L + lam R
recorded on a fastad tape, with the reverse sweep's adjoints printed next to
the notes' hand-derived formulas.
"""
import argparse
import sys

import fastad as fad
from fastad.transforms import _record

X, T, LAM = 1.5, 0.8, 0.1


def logistic(w, b, x=X, t=T, lam=LAM):
    z = w * x + b
    y = fad.sigmoid(z)
    L = 0.5 * (y - t) ** 2
    R = 0.5 * w ** 2
    Lreg = L + lam * R
    return Lreg, dict(z=z, y=y, L=L, R=R, Lreg=Lreg)


def tour(w=0.3, b=-0.2):
    print("fastad tour: the notes' logistic regression, recorded on a tape\n")
    tape, (out, parts) = _record(logistic, (w, b), {}, (0, 1))
    print(tape)
    adj = tape.reverse(out.slot)
    z, y = parts["z"].value, parts["y"].value
    sig_prime = y * (1 - y)
    ybar = y - T
    zbar = ybar * sig_prime
    hand = {
        "Lreg": 1.0,
        "R": LAM,
        "L": 1.0,
        "y": ybar,
        "z": zbar,
    }
    print(f"\nvalues: x={X} t={T} lam={LAM} w={w} b={b}")
    print(f"  z={z:.6f} y={y:.6f} L={parts['L'].value:.6f} "
          f"R={parts['R'].value:.6f} Lreg={out.value:.6f}\n")
    print(f"  {'adjoint':<8}{'reverse sweep':>16}{'notes formula':>16}   formula")
    formulas = {"Lreg": "1", "R": "Lreg_bar * lam", "L": "Lreg_bar",
                "y": "L_bar (y - t)", "z": "y_bar sigmoid'(z)"}
    worst = 0.0
    for name in ("Lreg", "R", "L", "y", "z"):
        got = adj[parts[name].slot]
        worst = max(worst, abs(got - hand[name]))
        print(f"  {name + '_bar':<8}{got:>16.10f}{hand[name]:>16.10f}   {formulas[name]}")
    gw, gb = fad.grad(lambda w, b: logistic(w, b)[0], argnums=(0, 1))(w, b)
    wbar, bbar = zbar * X + LAM * w, zbar
    for name, got, want, formula in (("w", gw, wbar, "z_bar x + lam w"),
                                     ("b", gb, bbar, "z_bar")):
        worst = max(worst, abs(got - want))
        print(f"  {name + '_bar':<8}{got:>16.10f}{want:>16.10f}   {formula}")
    print(f"\n  largest difference from the notes: {worst:.1e}")
    if not worst < 1e-12:
        raise SystemExit("fastad tour: adjoints disagree with the notes' formulas")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastad", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-bench", action="store_true", help="skip the benchmark")
    parser.add_argument("--full", action="store_true",
                        help="full-size benchmark (a few minutes) instead of the quick one")
    args = parser.parse_args(argv)
    tour()
    if not args.no_bench:
        from fastad.bench import run
        print("\nBenchmark: fastad against plain floats and a pure-Python tape "
              f"({'full' if args.full else 'quick'}; progress on stderr)\n")
        sys.stdout.flush()
        print(run(quick=not args.full))


if __name__ == "__main__":
    main()
