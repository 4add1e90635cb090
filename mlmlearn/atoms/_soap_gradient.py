"""Analytic SOAP derivatives over (centre, atom) pairs within the cutoff.

dscribe's analytic derivatives (``SOAP.derivatives(..., attach=True)``) fill a
dense array ``(n_centres, n_atoms, 3, n_features)`` and contract the power
spectrum's derivative per (centre, atom) pair in a scalar loop: for
Au25(SCH3)18 (115 atoms, 544 features) 173 MB, of which 81 % are zeros, and
~90 ms. This module computes the same quantity for the pairs that can be
nonzero only, with dscribe's GTO basis, in two compiled passes:

1. the expansion: for every neighbour ``j`` of every centre ``i`` (every
   periodic image within ``r_cut + padding``), its contribution to the
   coefficients ``c_i[s, n, lm]`` and the gradient of that contribution with
   respect to ``r_j``; the centre's own gradient is minus their sum, because
   the centre moves with its atom (dscribe's ``attach=True``);
2. the power spectrum's derivative, with ``c₁ = c_i[s₁n₁lm]`` and ``c₂ = c_i[s₂n₂lm]``,
   ``∂p_i[s₁s₂ l n₁n₂]/∂r_j = prel_l Σ_m (∂c₁/∂r_j c₂ + c₁ ∂c₂/∂r_j)``
   in dscribe's feature order; an atom other than the centre touches one
   species channel ``s`` only, so only the features with ``s`` in them are
   computed for it.

The GTO constants, the neighbour test (``|r_j − r_i|² ≤ (r_cut + padding)²``,
computed as dscribe computes it) and the feature order are dscribe's, so the
result equals dscribe's dense array up to rounding with two documented
differences:

* dscribe skips a term of the power spectrum's derivative when both of its
  coefficients are below 1e-8 in absolute value; this module keeps every term,
  so its result is the exact gradient of the features (the difference is at
  most ``prel_l · 1e-8 · |∂c|`` per skipped term);
* the spherical harmonics are evaluated by the upward recursion of the
  associated Legendre functions instead of dscribe's tabulated polynomials
  (the power spectrum does not depend on the choice of real harmonics within
  each ``l``); dscribe's ``l = 1`` prefactor ``2.7206990463849543`` is
  1.2e-11 above ``π^{3/2} √(3/4π)`` and is used as it is, so that the
  derivative is that of the features :meth:`SOAP.transform` returns.

A third kernel contracts a gradient with respect to the features straight
into one with respect to the positions (``Σ_i G_i · ∂p_i/∂r``, a
vector-Jacobian product) through the coefficients, without forming ``∂p/∂r``:
what a potential's forces need.

The pure-Python kernels (``_expansion_py``, ``_power_derivatives_py``,
``_pullback_py``) stay importable as the oracles of the compiled ones.
"""

import functools
from math import factorial, pi, sqrt

import numpy as np
from scipy.spatial import cKDTree

from .._optional import compile_once, import_optional

#: dscribe's prefactor of the l = 1 coefficients (soapGTO.cpp), π^{3/2} √(3/4π) to 1.2e-11.
DSCRIBE_L1_PREFACTOR = 2.7206990463849543


@functools.lru_cache(maxsize=16)
def gto_constants(r_cut, n_max, l_max, sigma):
    """dscribe's GTO constants for one descriptor (cached, read-only).

    Parameters
    ----------
    r_cut : float
        Cutoff in Å.
    n_max, l_max : int
    sigma : float
        Gaussian width in Å.

    Returns
    -------
    constants : dict
        ``"cutoff"`` (``r_cut`` plus dscribe's padding ``σ √(−2 ln 10⁻³)``, Å),
        ``"aOa"`` (l_max+1, n_max) the exponents and ``"bOa"`` (l_max+1,
        n_max, n_max) the radial weights of dscribe's ``getAlphaBetaD``,
        ``"norm"`` ((l_max+1)²,) the prefactors of the real solid harmonics
        (including dscribe's π^{3/2}), ``"dfact"`` (l_max+1,) the double
        factorials (2m−1)!!, ``"prel"`` (l_max+1,) the power spectrum's
        ``π √(8/(2l+1))``.
    """
    DscribeSOAP = import_optional("dscribe.descriptors", purpose="SOAP derivatives").SOAP
    soap = DscribeSOAP(species=["H"], r_cut=r_cut, n_max=n_max, l_max=l_max, sigma=sigma)
    alphas, betas = soap.get_basis_gto(r_cut, n_max, l_max)
    eta = 1 / (2 * sigma**2)  # dscribe's _eta
    one_o_eta = 1.0 / eta
    pre = np.sqrt(one_o_eta * one_o_eta * one_o_eta)
    one = 1.0 / (1.0 + one_o_eta * alphas)
    aOa = -alphas * one
    bOa = np.empty_like(betas)
    for l in range(l_max + 1):
        bOa[l] = pre * betas[l] * (np.sqrt(one[l]) * one[l] ** (l + 1))[None, :]
    norm = np.empty((l_max + 1) ** 2)
    for l in range(l_max + 1):
        for m in range(l + 1):
            N = sqrt((2 * l + 1) / (4 * pi) * factorial(l - m) / factorial(l + m))
            N *= pi**1.5
            if l == 1:
                N *= DSCRIBE_L1_PREFACTOR / (pi**1.5 * sqrt(3 / (4 * pi)))
            if m == 0:
                norm[l * l + l] = N
            else:
                norm[l * l + l + m] = norm[l * l + l - m] = sqrt(2.0) * N
    dfact = np.array([float(np.prod(np.arange(1, 2 * m, 2))) for m in range(l_max + 1)])
    prel = np.array([pi * sqrt(8.0 / (2 * l + 1)) for l in range(l_max + 1)])
    out = dict(cutoff=float(r_cut) + soap.get_cutoff_padding(), aOa=aOa, bOa=bOa,
               norm=norm, dfact=dfact, prel=prel)
    for value in out.values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    return out


def feature_table(n_species, n_max, l_max):
    """``(s₁, s₂, l, n₁, n₂)`` of every dscribe SOAP feature, in dscribe's order.

    Species pairs ``s₁ ≤ s₂`` (indices into the sorted species), then ``l``,
    then ``n₁ ≤ n₂`` when ``s₁ = s₂`` and all ``(n₁, n₂)`` otherwise — dscribe's
    ``getPD`` without compression.

    Returns
    -------
    table : ndarray of shape (n_features, 5), int64
    """
    rows = []
    for s1 in range(n_species):
        for s2 in range(s1, n_species):
            for l in range(l_max + 1):
                for n1 in range(n_max):
                    for n2 in range(n1 if s1 == s2 else 0, n_max):
                        rows.append((s1, s2, l, n1, n2))
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


def neighbour_pairs(positions, cutoff, cell=None, pbc=None):
    """Every atom (and periodic image) within ``cutoff`` of every atom.

    The test is dscribe's: ``Σ_a (r_j,a − r_i,a)² ≤ cutoff·cutoff``, summed in
    the order x, y, z, with periodic images at dscribe's ``extend_system``
    offsets, so that the same atoms are included up to the rounding of the
    image positions.

    Parameters
    ----------
    positions : ndarray of shape (n_atoms, 3)
        Å.
    cutoff : float
        Å.
    cell : ndarray of shape (3, 3), default=None
        Rows are the cell vectors (Å); used with ``pbc``.
    pbc : ndarray of shape (3,) of bool, default=None
        Periodic directions; None or all False is a finite system.

    Returns
    -------
    centre, atom : ndarray of shape (n_records,), int64
        The centre ``i`` and the atom ``j`` whose image lies within ``cutoff``;
        the centre itself (its own position) is left out, its other periodic
        images are not. Sorted by centre, then by atom.
    vector : ndarray of shape (n_records, 3)
        ``r_j + T − r_i`` in Å, ``T`` the image's lattice translation.
    """
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    n = len(pos)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)))
    if n == 0:
        return empty
    periodic = pbc is not None and bool(np.any(pbc))
    if periodic:
        ext = _extend(pos, np.asarray(cell, dtype=np.float64), np.asarray(pbc, bool), cutoff)
    else:
        ext = pos
    # candidates a hair beyond the cutoff, then dscribe's exact test
    radius = cutoff * (1.0 + 1e-9)
    if periodic:
        found = cKDTree(pos).sparse_distance_matrix(cKDTree(ext), radius, output_type="ndarray")
        i, e = found["i"].astype(np.int64), found["j"].astype(np.int64)
    else:
        found = cKDTree(pos).query_pairs(radius, output_type="ndarray").astype(np.int64)
        i = np.concatenate([found[:, 0], found[:, 1]])
        e = np.concatenate([found[:, 1], found[:, 0]])
    if i.size == 0:
        return empty
    delta = ext[e] - pos[i]
    d2 = delta[:, 0] * delta[:, 0] + delta[:, 1] * delta[:, 1] + delta[:, 2] * delta[:, 2]
    keep = (d2 <= cutoff * cutoff) & (e != i)
    i, e, delta = i[keep], e[keep], delta[keep]
    j = e % n
    order = np.lexsort((e, j, i))
    return i[order], j[order], np.ascontiguousarray(delta[order])


def _extend(pos, cell, pbc, cutoff):
    """Copies of ``pos`` at dscribe's ``extend_system`` offsets, copy 0 the original."""
    a, b, c = cell
    perp = [np.cross(b, c), np.cross(c, a), np.cross(a, b)]
    multipliers = []
    for axis in range(3):
        if pbc[axis]:
            p = perp[axis] * (np.dot(cell[axis], perp[axis]) / np.dot(perp[axis], perp[axis]))
            k = int(np.ceil(cutoff / np.linalg.norm(p)))
            multipliers.append(list(range(0, k + 1)) + list(range(-k, 0)))
        else:
            multipliers.append([0])
    copies = []
    for ma in multipliers[0]:
        for mb in multipliers[1]:
            for mc in multipliers[2]:
                shift = ma * a + mb * b + mc * c
                copies.append(pos + shift)
    return np.concatenate(copies)


# ----------------------------------------------------------------- kernels
def _expansion_py(vector, centre, species, pair, weight, dweight, aOa, bOa, norm, dfact, c, D,
                  Dd):  # pragma: no cover - compiled by numba
    """Accumulate the GTO coefficients and their gradients over neighbour records.

    For record ``p`` (centre ``i``, neighbour of species ``s`` at ``vector[p]``):
    ``c[i, s, n, lm] += w(r) Σ_k bOa[l,n,k] exp(aOa[l,k] r²) Y_lm(r)`` with
    ``Y_lm = norm[lm] r^l Ỹ_lm`` the real solid harmonics, ``w = weight[p]``
    the radial weighting and ``dweight[p] = w'(r)/r``; its gradient ``g``
    with respect to the neighbour's position is added to ``D[pair[p]]`` (when
    ``pair[p] ≥ 0``; a periodic image of the centre itself moves with it and
    has ``pair[p] = −1``) and subtracted from ``Dd[i, :, s]`` (the centre's own
    gradient, dscribe's ``attach=True``).
    """
    n_l, n_max = aOa.shape
    l_max = n_l - 1
    E = np.empty((n_l, n_max))
    R = np.empty((n_l, n_max))
    G = np.empty((n_l, n_max))
    Y = np.empty(n_l * n_l)
    dY = np.empty((3, n_l * n_l))
    Cm = np.empty(n_l)
    Sm = np.empty(n_l)
    Q = np.empty(n_l)
    Qz = np.empty(n_l)
    Qr = np.empty(n_l)
    for p in range(vector.shape[0]):
        x = vector[p, 0]
        y = vector[p, 1]
        z = vector[p, 2]
        r2 = x * x + y * y + z * z
        for l in range(n_l):
            for k in range(n_max):
                E[l, k] = np.exp(aOa[l, k] * r2)
            for n in range(n_max):
                r = 0.0
                g = 0.0
                for k in range(n_max):
                    w = bOa[l, n, k] * E[l, k]
                    r += w
                    g += 2.0 * aOa[l, k] * w
                # ∇(w R) = (w G + w'(r)/r R) r⃗ when ∇R = G r⃗
                R[l, n] = weight[p] * r
                G[l, n] = weight[p] * g + dweight[p] * r
        # real solid harmonics r^l Y_lm and their gradients: (x + iy)^m times
        # the associated Legendre polynomial in (z, r²), by upward recursion in l
        Cm[0] = 1.0
        Sm[0] = 0.0
        for m in range(1, n_l):
            Cm[m] = x * Cm[m - 1] - y * Sm[m - 1]
            Sm[m] = x * Sm[m - 1] + y * Cm[m - 1]
        for m in range(n_l):
            Q[m] = dfact[m]
            Qz[m] = 0.0
            Qr[m] = 0.0
            if m + 1 <= l_max:
                Q[m + 1] = (2 * m + 1) * z * dfact[m]
                Qz[m + 1] = (2 * m + 1) * dfact[m]
                Qr[m + 1] = 0.0
            for l in range(m + 2, n_l):
                a = (2 * l - 1) / (l - m)
                b = (l + m - 1) / (l - m)
                Q[l] = a * z * Q[l - 1] - b * r2 * Q[l - 2]
                Qz[l] = a * (Q[l - 1] + z * Qz[l - 1]) - b * r2 * Qz[l - 2]
                Qr[l] = a * z * Qr[l - 1] - b * (Q[l - 2] + r2 * Qr[l - 2])
            for l in range(m, n_l):
                dqx = 2.0 * x * Qr[l]
                dqy = 2.0 * y * Qr[l]
                dqz = Qz[l] + 2.0 * z * Qr[l]
                if m == 0:
                    idx = l * l + l
                    f = norm[idx]
                    Y[idx] = f * Q[l]
                    dY[0, idx] = f * dqx
                    dY[1, idx] = f * dqy
                    dY[2, idx] = f * dqz
                else:
                    idx = l * l + l + m
                    f = norm[idx]
                    F = Cm[m]
                    Y[idx] = f * Q[l] * F
                    dY[0, idx] = f * (dqx * F + Q[l] * m * Cm[m - 1])
                    dY[1, idx] = f * (dqy * F - Q[l] * m * Sm[m - 1])
                    dY[2, idx] = f * dqz * F
                    idx = l * l + l - m
                    f = norm[idx]
                    F = Sm[m]
                    Y[idx] = f * Q[l] * F
                    dY[0, idx] = f * (dqx * F + Q[l] * m * Sm[m - 1])
                    dY[1, idx] = f * (dqy * F + Q[l] * m * Cm[m - 1])
                    dY[2, idx] = f * dqz * F
        i = centre[p]
        s = species[p]
        q = pair[p]
        for l in range(n_l):
            for lm in range(l * l, (l + 1) * (l + 1)):
                for n in range(n_max):
                    c[i, s, n, lm] += R[l, n] * Y[lm]
                    gx = G[l, n] * x * Y[lm] + R[l, n] * dY[0, lm]
                    gy = G[l, n] * y * Y[lm] + R[l, n] * dY[1, lm]
                    gz = G[l, n] * z * Y[lm] + R[l, n] * dY[2, lm]
                    if q >= 0:
                        D[q, 0, n, lm] += gx
                        D[q, 1, n, lm] += gy
                        D[q, 2, n, lm] += gz
                        Dd[i, 0, s, n, lm] -= gx
                        Dd[i, 1, s, n, lm] -= gy
                        Dd[i, 2, s, n, lm] -= gz


def _power_derivatives_py(c, D, pair_centre, pair_species, pair_row, Dd, diag_row,
                          table, prel, out):  # pragma: no cover - compiled by numba
    """Write ``∂p/∂r`` of every pair into ``out`` (zeros where it vanishes).

    ``D[q]`` (3, n_max, (l_max+1)²) is the gradient of centre
    ``pair_centre[q]``'s coefficients in the channel ``pair_species[q]`` (the
    only one an atom other than the centre touches); ``Dd[i]`` (3, n_species,
    n_max, (l_max+1)²) the centre's own gradient in every channel. Rows
    ``pair_row[q]`` and ``diag_row[i]`` of ``out`` receive them.
    """
    n_features = table.shape[0]
    for q in range(D.shape[0]):
        i = pair_centre[q]
        s = pair_species[q]
        row = pair_row[q]
        for f in range(n_features):
            s1 = table[f, 0]
            s2 = table[f, 1]
            if s1 != s and s2 != s:
                continue
            l = table[f, 2]
            n1 = table[f, 3]
            n2 = table[f, 4]
            a0 = 0.0
            a1 = 0.0
            a2 = 0.0
            if s1 == s:
                for m in range(l * l, (l + 1) * (l + 1)):
                    v = c[i, s2, n2, m]
                    a0 += D[q, 0, n1, m] * v
                    a1 += D[q, 1, n1, m] * v
                    a2 += D[q, 2, n1, m] * v
            if s2 == s:
                for m in range(l * l, (l + 1) * (l + 1)):
                    v = c[i, s1, n1, m]
                    a0 += D[q, 0, n2, m] * v
                    a1 += D[q, 1, n2, m] * v
                    a2 += D[q, 2, n2, m] * v
            out[row, 0, f] = prel[l] * a0
            out[row, 1, f] = prel[l] * a1
            out[row, 2, f] = prel[l] * a2
    for i in range(Dd.shape[0]):
        row = diag_row[i]
        for f in range(n_features):
            s1 = table[f, 0]
            s2 = table[f, 1]
            l = table[f, 2]
            n1 = table[f, 3]
            n2 = table[f, 4]
            a0 = 0.0
            a1 = 0.0
            a2 = 0.0
            for m in range(l * l, (l + 1) * (l + 1)):
                v = c[i, s2, n2, m]
                w = c[i, s1, n1, m]
                a0 += Dd[i, 0, s1, n1, m] * v + w * Dd[i, 0, s2, n2, m]
                a1 += Dd[i, 1, s1, n1, m] * v + w * Dd[i, 1, s2, n2, m]
                a2 += Dd[i, 2, s1, n1, m] * v + w * Dd[i, 2, s2, n2, m]
            out[row, 0, f] = prel[l] * a0
            out[row, 1, f] = prel[l] * a1
            out[row, 2, f] = prel[l] * a2


def _pullback_py(c, D, pair_start, pair_atom, pair_species, Dd, table, prel, G,
                 out):  # pragma: no cover - compiled by numba
    """Add ``Σ_i G[i] · ∂p_i/∂r_j`` to ``out[j]`` without forming ``∂p/∂r``.

    Per centre, ``H[s, n, lm] = ∂(G_i · p_i)/∂c_i[s, n, lm]
    = Σ_f G_i[f] prel_l ([s₁n₁ = sn] c_i[s₂n₂lm] + [s₂n₂ = sn] c_i[s₁n₁lm])``,
    then ``out[j] += Σ H · ∂c_i/∂r_j`` over the centre's pairs
    ``pair_start[i]:pair_start[i+1]`` and its own gradient ``Dd[i]``.
    """
    n, n_species, n_max, n_lm = c.shape
    H = np.zeros((n_species, n_max, n_lm))
    for i in range(n):
        H[:] = 0.0
        for f in range(table.shape[0]):
            g = G[i, f]
            if g == 0.0:
                continue
            s1 = table[f, 0]
            s2 = table[f, 1]
            l = table[f, 2]
            n1 = table[f, 3]
            n2 = table[f, 4]
            gp = g * prel[l]
            for m in range(l * l, (l + 1) * (l + 1)):
                H[s1, n1, m] += gp * c[i, s2, n2, m]
                H[s2, n2, m] += gp * c[i, s1, n1, m]
        for a in range(3):
            acc = 0.0
            for s in range(n_species):
                for k in range(n_max):
                    for m in range(n_lm):
                        acc += Dd[i, a, s, k, m] * H[s, k, m]
            out[i, a] += acc
        for q in range(pair_start[i], pair_start[i + 1]):
            j = pair_atom[q]
            s = pair_species[q]
            for a in range(3):
                acc = 0.0
                for k in range(n_max):
                    for m in range(n_lm):
                        acc += D[q, a, k, m] * H[s, k, m]
                out[j, a] += acc


def kernels():
    """The compiled kernels (or loaded from numba's cache), once per process, thread-safe.

    Returns
    -------
    kernels : dict
        ``"expansion"``, ``"power_derivatives"`` and ``"pullback"``, the
        compiled ``_expansion_py``, ``_power_derivatives_py`` and ``_pullback_py``.

    Raises
    ------
    ModuleNotFoundError
        Without numba, naming the extra that installs it.
    """
    return _compile()


@compile_once
def _compile():
    numba = import_optional("numba", purpose="the SOAP derivative kernels")
    jit = numba.njit(cache=True, nogil=True)
    return {"expansion": jit(_expansion_py), "power_derivatives": jit(_power_derivatives_py),
            "pullback": jit(_pullback_py)}


def radial_weights(r, weighting):
    """dscribe's radial weighting ``w(r)`` and ``w'(r)/r`` at distances ``r`` > 0.

    Parameters
    ----------
    r : ndarray
        Distances in Å.
    weighting : dict or None
        dscribe's ``weighting`` (``"function"`` ``"poly"``, ``"pow"`` or
        ``"exp"`` with ``r0``, ``c``, ``m``, ``d``; ``"w0"`` is the centre's
        own weight, see :func:`self_weight`). None or without ``"function"``
        is 1 everywhere.

    Returns
    -------
    w, dw_over_r : ndarray
        Same shape as ``r``.

    Notes
    -----
    ``poly``: ``c (1 + 2x³ − 3x²)^m`` for ``x = r/r0 ≤ 1``, else 0 — smooth
    (for m ≥ 1, its derivative vanishes at r0), so atoms leaving the cutoff
    change nothing abruptly. ``pow``: ``c / (d + x^m)``; ``exp``:
    ``c / (d + e^{−x})``; neither vanishes at the cutoff.
    """
    r = np.asarray(r, dtype=np.float64)
    function = None if not weighting else weighting.get("function")
    if function is None:
        return np.ones_like(r), np.zeros_like(r)
    r0 = float(weighting["r0"])
    c = float(weighting["c"])
    x = r / r0
    if function == "poly":
        m = float(weighting["m"])
        base = 1 + 2 * x**3 - 3 * x**2
        inside = (r <= r0) & (base > 0)
        safe = np.where(inside, base, 1.0)
        w = np.where(r <= r0, c * np.where(inside, safe, 0.0) ** m, 0.0)
        dw = np.where(inside, c * m * safe ** (m - 1) * (6 * x**2 - 6 * x) / r0, 0.0)
    elif function == "pow":
        d, m = float(weighting["d"]), float(weighting["m"])
        w = c / (d + x**m)
        dw = -c * m * x ** (m - 1) / r0 / (d + x**m) ** 2
    elif function == "exp":
        d = float(weighting["d"])
        e = np.exp(-x)
        w = c / (d + e)
        dw = c * e / r0 / (d + e) ** 2
    else:
        raise ValueError(f"weighting function {function!r} is not one of dscribe's "
                         "'poly', 'pow', 'exp'")
    with np.errstate(divide="ignore", invalid="ignore"):
        return w, np.where(r > 0, dw / r, 0.0)


def self_weight(weighting):
    """The weight of a centre's own atom (at r = 0): ``w0`` if given, else ``w(0)``."""
    if weighting and weighting.get("w0") is not None:
        return float(weighting["w0"])
    with np.errstate(divide="ignore"):
        return float(radial_weights(np.zeros(1), weighting)[0][0])


def soap_expansion(positions, species_index, n_species, constants, *, cell=None, pbc=None,
                   weighting=None, compiled=True):
    """GTO coefficients of every atom and their gradients over the pairs within the cutoff.

    Parameters
    ----------
    positions : ndarray of shape (n_atoms, 3)
        Å.
    species_index : ndarray of shape (n_atoms,), int
        Each atom's index into the descriptor's sorted species.
    n_species : int
    constants : dict
        :func:`gto_constants` of the descriptor.
    cell, pbc : see :func:`neighbour_pairs`
    weighting : dict, default=None
        dscribe's radial ``weighting`` (see :func:`radial_weights`).
    compiled : bool, default=True
        Use the numba kernel; False runs the pure-Python oracle (slow).

    Returns
    -------
    expansion : dict
        ``"c"`` (n_atoms, n_species, n_max, (l_max+1)²) the coefficients
        (dscribe's for l ≤ 1, π^{3/2} times dscribe's for l ≥ 2, whose
        ``prel`` carries π³ instead); ``"pair_centre"``, ``"pair_atom"``,
        ``"pair_species"`` (n_other,) the pairs ``(i, j ≠ i)`` with an image
        of ``j`` within the cutoff of ``i`` and ``j``'s species index, sorted;
        ``"D"`` (n_other, 3, n_max, (l_max+1)²) ``∂c_i[s_j]/∂r_j`` (Å⁻¹, the
        other channels are zero); ``"Dd"`` (n_atoms, 3, n_species, n_max,
        (l_max+1)²) ``∂c_i/∂r_i``.
    """
    aOa, bOa, norm, dfact = (constants[k] for k in ("aOa", "bOa", "norm", "dfact"))
    n_l, n_max = aOa.shape
    n = len(positions)
    species_index = np.asarray(species_index, dtype=np.int64)
    i, j, vector = neighbour_pairs(positions, constants["cutoff"], cell, pbc)
    # one pair per (centre, atom ≠ centre), however many images of the atom
    other = j != i
    key = i * n + j
    uniq = np.unique(key[other])
    pair = np.full(i.size, -1, dtype=np.int64)
    pair[other] = np.searchsorted(uniq, key[other])
    c = np.zeros((n, n_species, n_max, n_l * n_l))
    D = np.zeros((uniq.size, 3, n_max, n_l * n_l))
    Dd = np.zeros((n, 3, n_species, n_max, n_l * n_l))
    # every centre sees itself at r = 0: only its l = 0 coefficients, never a gradient
    c[np.arange(n), species_index, :, 0] += (
        self_weight(weighting) * bOa[0].sum(axis=1) * norm[0])
    r = np.sqrt(vector[:, 0] * vector[:, 0] + vector[:, 1] * vector[:, 1]
                + vector[:, 2] * vector[:, 2])
    weight, dweight = radial_weights(r, weighting)
    expansion = kernels()["expansion"] if compiled else _expansion_py
    expansion(vector, i, species_index[j], pair, weight, dweight, aOa, bOa, norm, dfact, c, D,
              Dd)
    return dict(c=c, D=D, Dd=Dd, pair_centre=uniq // n, pair_atom=uniq % n,
                pair_species=species_index[uniq % n])


def sparse_soap_derivatives(expansion, constants, *, compiled=True):
    """``∂p_i/∂r_j`` of dscribe's GTO SOAP for every pair that can be nonzero.

    Parameters
    ----------
    expansion : dict
        :func:`soap_expansion` of the structure.
    constants : dict
        :func:`gto_constants` of the descriptor.
    compiled : bool, default=True
        Use the numba kernel; False runs the pure-Python oracle (slow).

    Returns
    -------
    centre, atom : ndarray of shape (n_pairs,), int64
        Every pair ``(i, j)`` with ``j = i`` or an image of ``j`` within the
        cutoff of ``i``, sorted by centre, then atom.
    dX : ndarray of shape (n_pairs, 3, n_features)
        ``dX[p] = ∂p_{centre[p]}/∂r_{atom[p]}`` in Å⁻¹, dscribe's feature order.
    """
    c, D, Dd = expansion["c"], expansion["D"], expansion["Dd"]
    n, n_species, n_max, _ = c.shape
    table = feature_table(n_species, n_max, len(constants["prel"]) - 1)
    n_other = len(D)
    # rows: the pairs and the diagonal, sorted by (centre, atom)
    key = np.concatenate([expansion["pair_centre"] * n + expansion["pair_atom"],
                          np.arange(n, dtype=np.int64) * (n + 1)])
    order = np.argsort(key, kind="stable")
    rows = np.empty_like(order)
    rows[order] = np.arange(order.size)
    dX = np.zeros((key.size, 3, len(table)))
    power_derivatives = (kernels()["power_derivatives"] if compiled
                         else _power_derivatives_py)
    power_derivatives(c, D, expansion["pair_centre"], expansion["pair_species"],
                      rows[:n_other], Dd, rows[n_other:], table, constants["prel"], dX)
    return key[order] // n, key[order] % n, dX


def soap_pullback(expansion, constants, G, *, compiled=True):
    """``Σ_i G[i] · ∂p_i/∂r_j`` for every atom ``j``, through the coefficients.

    Parameters
    ----------
    expansion : dict
        :func:`soap_expansion` of the structure.
    constants : dict
        :func:`gto_constants` of the descriptor.
    G : array-like of shape (n_atoms, n_features)
        A gradient with respect to each atom's SOAP row (e.g. ``∂E/∂p_i``).
    compiled : bool, default=True
        Use the numba kernel; False runs the pure-Python oracle (slow).

    Returns
    -------
    out : ndarray of shape (n_atoms, 3)
        In units of ``G`` per Å (``−out`` is the force when ``G = ∂E/∂p``).
    """
    c = expansion["c"]
    n, n_species, n_max, _ = c.shape
    table = feature_table(n_species, n_max, len(constants["prel"]) - 1)
    G = np.ascontiguousarray(G, dtype=np.float64)
    if G.shape != (n, len(table)):
        raise ValueError(f"G has shape {G.shape}; expected (n_atoms, n_features) = "
                         f"{(n, len(table))}")
    pair_start = np.searchsorted(expansion["pair_centre"], np.arange(n + 1))
    out = np.zeros((n, 3))
    pullback = kernels()["pullback"] if compiled else _pullback_py
    pullback(c, expansion["D"], pair_start, expansion["pair_atom"], expansion["pair_species"],
             expansion["Dd"], table, constants["prel"], G, out)
    return out
