"""Plain-NumPy specifications of the kernels, shared by the CPU kernel tests and the backend suite."""

import numpy as np


def cd_oracle(Y, G, P, steps, max_sweeps, tol, clip_rel, clip_abs):
    """Plain-Python Gauss-Seidel projected coordinate steps (the kernel's specification)."""
    Y = Y.astype(np.float64).copy()
    n_clipped = 0
    for r in range(Y.shape[0]):
        for _ in range(max_sweeps):
            moved = 0.0
            for j in range(Y.shape[1]):
                if steps[j] == 0:
                    continue
                d = -steps[j] * (Y[r] @ G[:, j] - P[r, j])
                limit = max(clip_rel[j] * abs(Y[r, j]), clip_abs[j])
                if abs(d) > limit:
                    d = np.sign(d) * limit
                    n_clipped += 1
                new = max(Y[r, j] + d, 0.0)
                moved += abs(new - Y[r, j])
                Y[r, j] = new
            if moved <= tol * np.abs(Y[r]).sum():
                break
    return Y, n_clipped


def statistics_oracle(Y, G, P, sq_weight):
    """What a step adds to the statistics: the gradient at the start, and ``sq_weight``
    times its squared column norms."""
    g = Y.astype(np.float64) @ G.astype(np.float64) - P.astype(np.float64)
    return g, sq_weight * np.sum(g * g, axis=0)


def random_cd_problem(rng, n_rows, k, dtype):
    B = rng.random((k, 3 * k + 1))
    G = (B @ B.T).astype(dtype)
    P = rng.random((n_rows, k)).astype(dtype) * 3
    Y = rng.random((n_rows, k)).astype(dtype)
    steps = (1.0 / np.diag(G)).astype(dtype)
    return Y, G, P, steps
