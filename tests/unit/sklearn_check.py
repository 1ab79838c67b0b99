#!/usr/bin/env python3
"""sklearn_check.py — fit scikit-learn on a matrix test_train.c wrote, for
comparison with LIBLINEAR as promod calls it.

    sklearn_check.py logistic|ridge FILE C TOL

FILE is CSV without header: the target first, then the features exactly as
LIBLINEAR saw them (already standardised).  Prints one JSON object:
{"coef": [...], "intercept": x}.

logistic: LogisticRegression(solver="liblinear", C=C, tol=TOL) — the bias
  is liblinear's constant feature 1 (intercept_scaling=1), regularised like
  the weights, as in promod.
ridge: promod fits LIBLINEAR's L2-loss SVR with epsilon 0, i.e. minimises
  1/2 |w|^2 + C * sum (y - w.x - b)^2 with the bias b a regularised feature
  of value 1; that is Ridge(alpha = 1 / (2 C)) on [X, 1] without a separate
  intercept.
"""
import json
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge


def main():
    kind, path, c, tol = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    data = np.loadtxt(path, delimiter=",", ndmin=2)
    y, x = data[:, 0], data[:, 1:]
    if kind == "logistic":
        m = LogisticRegression(solver="liblinear", C=c, tol=tol, intercept_scaling=1.0,
                               max_iter=10000)
        m.fit(x, y.astype(int))
        out = {"coef": m.coef_[0].tolist(), "intercept": float(m.intercept_[0])}
    elif kind == "ridge":
        xa = np.hstack([x, np.ones((x.shape[0], 1))])
        m = Ridge(alpha=1.0 / (2.0 * c), fit_intercept=False, tol=tol, solver="cholesky")
        m.fit(xa, y)
        out = {"coef": m.coef_[:-1].tolist(), "intercept": float(m.coef_[-1])}
    else:
        sys.exit("unknown kind " + kind)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
