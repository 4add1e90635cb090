"""Paper IV's chemical alignment rules for gold-thiolate clusters (section II C).

Each atom type aligns a few chemically meaningful neighbours instead of all
orderings of the nearest ones (thesis section 2.3.2, paper IV section II C):

============  ===========================================  =========  ========
type          points (after the atom itself)               orderings  accuracy
============  ===========================================  =========  ========
H             its C, the two other H on that C              2          (2.25)
C             its S, its three H                            6          (2.25)
S             its C, its two nearest Au                     2          (2.25)
Au unit       two blocks (S, the C on S, the other Au on S) 2 (blocks) (2.25)
Au half-unit  one block                                     1          (2.25)
Au core       S within 3.0 Å (if any) then Au within 5.0 Å, ≤ 12 neighbours:
              both with S: (self, S, nearest Au) against (self, S, each
              neighbour Au) of the reference; otherwise (self, two nearest Au)
              against ordered pairs of the reference's Au neighbours, the
              ``n_triangles`` closest by eq. (2.33) aligned. Accuracy (2.26)
              over nearest-neighbour distances of the larger neighbour set.
============  ===========================================  =========  ========

A unit-gold model sees half-unit gold too (the types change along MD): a
half-unit block is aligned with each block of a unit neighborhood, and the
accuracy is taken over that one block.

Types and neighbours come from the caches of
:class:`~mlmlearn.atoms.AtomicEnvironments` (one typing per structure and pair of
cutoffs, one neighbour list per structure), so
``environments.select(atom_types=..., bond_cutoff=..., core_cutoff=...)`` with the
alignment's cutoffs selects exactly the atoms the rules type so. Partners are
neighbour vectors, so periodic structures are aligned with the nearest images.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval

from .._optional import compile_once, import_optional
from ..atoms._neighbors import MissingNeighborsError
from ._alignment import ACCURACY_CONSTRAINT, Alignment
from ._superpose import (
    _qcp_adjugate_py,
    _qcp_key_py,
    _quaternion_rotation_py,
    _rotation_bound_py,
    _rotation_py,
    best_alignments,
    kernels,
    with_globals,
)

__all__ = ["GoldThiolateAlignment", "GoldThiolateNeighborhoods"]

H, C, S, UNIT, HALF, CORE_S, CORE = range(7)
_FAMILY = {
    H: "H",
    C: "C",
    S: "S",
    UNIT: "Au_unit",
    HALF: "Au_unit",
    CORE_S: "Au_core",
    CORE: "Au_core",
}
_MAX_POINTS = 13


class GoldThiolateNeighborhoods:
    """Neighborhoods of :class:`GoldThiolateAlignment`: padded points, counts, rule codes.

    ``points`` (n, 13, 3) holds each centre (row 0, at the origin) and its rule's
    neighbours; ``count`` the rows in use; ``kind`` the rule. Indexing with an
    integer array or a slice gives a subset.
    """

    def __init__(self, points, count, kind):
        self.points, self.count, self.kind = points, count, kind

    def __len__(self):
        return len(self.kind)

    def __getitem__(self, index):
        return GoldThiolateNeighborhoods(self.points[index], self.count[index], self.kind[index])


class GoldThiolateAlignment(Alignment):
    """Paper IV's alignment rules per gold-thiolate atom type.

    One OAMLM is trained per atom family — H, C, S, unit gold (with half-unit
    gold) or core gold — as in paper IV; aligning environments of different
    families raises a ``ValueError``.

    Parameters
    ----------
    bond_cutoff : float, default=3.0
        Bond radius (Å) of the atom typing
        (:meth:`AtomicEnvironments.gold_thiolate_types
        <mlmlearn.atoms.AtomicEnvironments.gold_thiolate_types>`) and of core gold's sulfur.
    partner_cutoff : float, default=4.0
        The rules' partners (the C of an H, the two Au of an S, …) are the
        nearest atoms of their element; farther than this (Å) raises
        :class:`~mlmlearn.atoms.MissingNeighborsError`. Hot MD frames stretch
        S–Au bonds past 3.0 Å, so partners are not held to the typing radius.
    core_cutoff : float, default=5.0
        Neighbour radius (Å) of core gold, and the typing's core radius.
        Environments selected by ``atom_types`` under another pair of typing
        cutoffs (their ``typing_cutoffs``) are refused with a ``ValueError``.
    n_core_neighbors : int, default=12
        At most this many core-gold neighbours (2 to 12).
    n_triangles : int, default=10
        Reference triangles aligned per pair for core gold without sulfur,
        chosen by eq. (2.33).
    accuracy : {"mean", "rss"}, default="mean"
        Accuracy of the non-core rules, eq. (2.25) or (2.26). Core gold always
        uses (2.26) over nearest-neighbour distances, as paper IV does.

    Examples
    --------
    >>> from mlmlearn.atoms import AtomicEnvironments
    >>> from mlmlearn.datasets import gold_thiolate_ring
    >>> ring = AtomicEnvironments(gold_thiolate_ring(4), species="S")
    >>> P = GoldThiolateAlignment().neighborhoods(ring)
    >>> len(P), int(P.count[0])  # S, its C and its two Au
    (4, 4)
    >>> R, g = GoldThiolateAlignment().align(P, P)
    >>> bool(g.diagonal().max() < 1e-6)
    True
    """

    _parameter_constraints: dict = {
        "bond_cutoff": [Interval(Real, 0, None, closed="neither")],
        "partner_cutoff": [Interval(Real, 0, None, closed="neither")],
        "core_cutoff": [Interval(Real, 0, None, closed="neither")],
        "n_core_neighbors": [Interval(Integral, 2, _MAX_POINTS - 1, closed="both")],
        "n_triangles": [Interval(Integral, 1, None, closed="left")],
        "accuracy": ACCURACY_CONSTRAINT,
    }

    def __init__(
        self,
        *,
        bond_cutoff=3.0,
        partner_cutoff=4.0,
        core_cutoff=5.0,
        n_core_neighbors=12,
        n_triangles=10,
        accuracy="mean",
    ):
        self.bond_cutoff = bond_cutoff
        self.partner_cutoff = partner_cutoff
        self.core_cutoff = core_cutoff
        self.n_core_neighbors = n_core_neighbors
        self.n_triangles = n_triangles
        self.accuracy = accuracy

    # --------------------------------------------------------- neighborhoods
    def neighborhoods(self, environments):
        """Each centre and its rule's partners.

        Parameters
        ----------
        environments : AtomicEnvironments
            Centres of Au, S, C and H; typed with this strategy's ``bond_cutoff``
            and ``core_cutoff`` (the cached typing that
            ``select(atom_types=..., bond_cutoff=..., core_cutoff=...)`` uses).
            Environments selected by type must have been selected under these
            cutoffs (their ``typing_cutoffs``).

        Returns
        -------
        GoldThiolateNeighborhoods

        Raises
        ------
        MissingNeighborsError
            Naming the atom, its type, its structure and the rule whose partner is missing.
        AtomTypingError
            Naming the structure and atom that match no typing rule.
        ValueError
            If ``environments`` were selected by ``atom_types`` under other
            typing cutoffs than this strategy's (both pairs named): their atoms
            could be typed — and aligned — under other rules than selected.
        """
        self._validate_params()
        self._check_typing(environments)
        n = len(environments)
        points = np.zeros((n, _MAX_POINTS, 3))
        count = np.zeros(n, dtype=np.int64)
        kind = np.zeros(n, dtype=np.int64)
        types = environments.gold_thiolate_types(
            bond_cutoff=self.bond_cutoff, core_cutoff=self.core_cutoff
        )
        reach = max(self.bond_cutoff, self.partner_cutoff, self.core_cutoff)
        atom = environments.atom_index
        for s, rows in environments.structure_rows():
            numbers = environments.structures[s].numbers
            rules = _Rules(numbers, environments.neighbor_list(s, reach), self, s)
            for row in rows:
                points[row], count[row], kind[row] = rules(int(atom[row]), types[row])
        return GoldThiolateNeighborhoods(points, count, kind)

    def _check_typing(self, environments):
        """Refuse environments selected by type under other cutoffs than this strategy's."""
        selected = getattr(environments, "typing_cutoffs", None)
        mine = (float(self.bond_cutoff), float(self.core_cutoff))
        if selected is None or tuple(selected) == mine:
            return
        raise ValueError(
            f"the environments were selected by atom type with bond_cutoff={selected[0]}, "
            f"core_cutoff={selected[1]} Å, but this GoldThiolateAlignment types atoms with "
            f"bond_cutoff={mine[0]}, core_cutoff={mine[1]} Å, under which the selected atoms "
            "may be of other types and would be aligned by other rules. Select with "
            f"select(atom_types=..., bond_cutoff={mine[0]}, core_cutoff={mine[1]}) or give the "
            f"alignment bond_cutoff={selected[0]}, core_cutoff={selected[1]}."
        )

    # ------------------------------------------------------------------ align
    def align(self, P, S):
        """Rotations and accuracies of every (input, reference) pair under the rules.

        Parameters
        ----------
        P, S : GoldThiolateNeighborhoods
            From :meth:`neighborhoods`, inputs and references.

        Returns
        -------
        R : ndarray of shape (len(P), len(S), 3, 3)
            The best ordering's (block's, candidate's) rotation, or the mean of the
            rotations tied with it within rounding (see :meth:`Alignment.align`):
            the H, C and S orderings, unit gold's blocks and core gold's
            triangles (eq. 2.33; equal triangles at the ``n_triangles`` boundary
            are all aligned).
        g : ndarray of shape (len(P), len(S))

        Raises
        ------
        ValueError
            For neighborhoods of more than one atom family.
        """
        self._validate_params()
        families = {_FAMILY[k] for k in np.unique(P.kind)} | {_FAMILY[k] for k in np.unique(S.kind)}
        if len(families) > 1:
            raise ValueError(
                f"GoldThiolateAlignment aligns one atom family per model; got {sorted(families)}. "
                "Train one OAMLM per atom type (select(atom_types=...))."
            )
        n, k = len(P), len(S)
        R = np.empty((n, k, 3, 3))
        g = np.empty((n, k))
        rss = self.accuracy == "rss"
        for a in np.unique(P.kind):
            rows = np.flatnonzero(P.kind == a)
            for b in np.unique(S.kind):
                cols = np.flatnonzero(S.kind == b)
                Rab, gab = self._align_kinds(int(a), int(b), P[rows], S[cols], rss)
                R[np.ix_(rows, cols)] = Rab
                g[np.ix_(rows, cols)] = gab
        return R, g

    def _align_kinds(self, a, b, P, S, rss):
        if a in (CORE, CORE_S):
            return _align_core(P, S, int(self.n_triangles))
        if a == b and a != HALF:
            m = int(P.count[0])
            orders = _ORDERS[a]
            Rab, gab, _ = best_alignments(P.points[:, :m], S.points[:, :m], orders, rss=rss)
            return Rab, gab
        # half-unit gold against unit or half-unit gold: block against block; the
        # reference's blocks are the kernel's orderings, the input's are tried in turn
        input_blocks = [(0, 1, 2, 3)] if a == HALF else [(0, 1, 2, 3), (0, 4, 5, 6)]
        reference_blocks = np.array([(0, 1, 2, 3)] if b == HALF else [(0, 1, 2, 3), (0, 4, 5, 6)])
        results = [
            best_alignments(P.points[:, list(block)], S.points, reference_blocks, rss=rss,
                            return_ties=True)
            for block in input_blocks
        ]
        return _merge_ties(results)


def _merge_ties(results):
    """Best accuracy over alignments of alternative input blocks; tied ones averaged.

    ``results`` are :func:`~mlmlearn.oamlm._superpose.best_alignments` outputs with
    ``return_ties=True``, one per input block. As within one call, the first block
    of least g wins and every block within twice its bound E_b joins the tie;
    R is the mean over all tied orderings of all tied blocks.
    """
    R = np.array([r[0] for r in results])  # (n_blocks, n, k, 3, 3)
    g = np.array([r[1] for r in results])
    bound = np.array([r[3] for r in results])
    count = np.array([r[4] for r in results])
    win = np.argmin(g, axis=0)  # the first block of least g, as a strict < keeps it
    g_best = np.take_along_axis(g, win[None], axis=0)[0]
    tau = 2.0 * np.take_along_axis(bound, win[None], axis=0)[0]
    tied = g - g_best <= tau
    R_best = np.take_along_axis(R, win[None, ..., None, None], axis=0)[0]
    merge = tied.sum(axis=0) > 1
    if np.any(merge):  # a block's R is the mean of its count tied orderings
        weight = np.where(tied, count, 0)[..., None, None]
        R_best[merge] = ((weight * R).sum(axis=0) / weight.sum(axis=0))[merge]
    return R_best, g_best


_ORDERS = {
    H: np.array([(0, 1, 2, 3), (0, 1, 3, 2)]),
    C: np.array(
        [
            (0, 1, *(2 + np.array(p)))
            for p in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
        ]
    ),
    S: np.array([(0, 1, 2, 3), (0, 1, 3, 2)]),
    UNIT: np.array([(0, 1, 2, 3, 4, 5, 6), (0, 4, 5, 6, 1, 2, 3)]),
}


_SYMBOLS = {1: "H", 6: "C", 16: "S", 79: "Au"}


class _Rules:
    """The neighbour choices of each rule, read from one structure's neighbour list.

    Partners of partners (the other H on an H's carbon, the C and Au on a gold
    atom's sulfur) are reached by adding neighbour vectors, so every point is the
    right periodic image.
    """

    def __init__(self, numbers, nl, alignment, structure):
        self.element = np.array([_SYMBOLS.get(int(z), "") for z in numbers])
        self.nl = nl
        self.cut = float(alignment.bond_cutoff)
        self.partner_cut = float(alignment.partner_cutoff)
        self.core_cut = float(alignment.core_cutoff)
        self.n_core = int(alignment.n_core_neighbors)
        self.structure = structure

    def nearest(self, i, element, count, *, back=None, owner, rule):
        """Vectors from atom ``i`` to its ``count`` nearest ``element`` atoms (≤ partner_cutoff).

        ``back`` is ``(atom, vector)`` of the entry to skip: the atom we came
        from, as seen from ``i``.
        """
        index, distance, vector = self.nl.of(i)
        ok = (self.element[index] == element) & (distance <= self.partner_cut)
        if back is not None:
            ok &= ~((index == back[0]) & (np.abs(vector - back[1]).max(axis=1) <= 1e-9))
        picks = np.flatnonzero(ok)[:count]
        if picks.size < count:
            atom, kind = owner
            where = "" if atom == i else f" of its partner atom {i}"
            raise MissingNeighborsError(
                f"atom {atom} ({kind}) of structure {self.structure}: {picks.size} "
                f"{element} within {self.partner_cut} Å{where}; the {rule} rule needs {count}"
            )
        return index[picks], vector[picks]

    def __call__(self, i, t):
        owner = (i, t)
        if t == "H":
            (c,), (v_c,) = self.nearest(i, "C", 1, owner=owner, rule="hydrogen")
            _, v_h = self.nearest(c, "H", 2, back=(i, -v_c), owner=owner, rule="hydrogen")
            return _points([v_c, *(v_c + v_h)], H)
        if t == "C":
            _, v_s = self.nearest(i, "S", 1, owner=owner, rule="carbon")
            _, v_h = self.nearest(i, "H", 3, owner=owner, rule="carbon")
            return _points([*v_s, *v_h], C)
        if t == "S":
            _, v_c = self.nearest(i, "C", 1, owner=owner, rule="sulfur")
            _, v_au = self.nearest(i, "Au", 2, owner=owner, rule="sulfur")
            return _points([*v_c, *v_au], S)
        if t in ("Au_unit", "Au_half_unit"):
            n_blocks = 2 if t == "Au_unit" else 1
            blocks = []
            sulfur, v_sulfur = self.nearest(i, "S", n_blocks, owner=owner, rule=t)
            for s, v_s in zip(sulfur, v_sulfur, strict=True):
                _, (v_c,) = self.nearest(s, "C", 1, owner=owner, rule=t)
                _, (v_au,) = self.nearest(s, "Au", 1, back=(i, -v_s), owner=owner, rule=t)
                blocks += [v_s, v_s + v_c, v_s + v_au]
            return _points(blocks, UNIT if n_blocks == 2 else HALF)
        # core gold: S within the bond cutoff first, then the nearest Au within core_cutoff
        index, distance, vector = self.nl.of(i)
        element = self.element[index]
        sulfur = np.flatnonzero((element == "S") & (distance <= self.cut))[:1]
        gold = np.flatnonzero((element == "Au") & (distance <= self.core_cut))
        gold = gold[: self.n_core - sulfur.size]
        if gold.size < 2:
            raise MissingNeighborsError(
                f"atom {i} (Au_core) of structure {self.structure} has {gold.size} Au within "
                f"{self.core_cut} Å; the core-gold rule needs 2"
            )
        return _points(vector[np.concatenate([sulfur, gold])], CORE_S if sulfur.size else CORE)


def _points(partners, kind):
    out = np.zeros((_MAX_POINTS, 3))
    out[1 : 1 + len(partners)] = partners
    return out, 1 + len(partners), kind


def _align_core(P, S, n_triangles):
    n, k = len(P), len(S)
    R = np.empty((n, k, 3, 3))
    g = np.empty((n, k))
    _core_kernel()(
        np.ascontiguousarray(P.points),
        P.count,
        P.kind == CORE_S,
        np.ascontiguousarray(S.points),
        S.count,
        S.kind == CORE_S,
        max(int(n_triangles), 1),
        R,
        g,
    )
    return R, g


def _core_kernel():
    """The compiled core-gold loop: one compile step per process, thread-safe."""
    return _compile()


@compile_once
def _compile(batched=True, outer=True):
    """The compiled core loop; ``batched=False`` aligns the candidates one at a time
    (:func:`_rotations_each_py`), the loop before their Newton iterations were
    interleaved, and ``outer=False`` sums the nearest neighbours in the plain order
    (:func:`_nn_accuracy_py`), the loop before :func:`_nn_outer_py` (the benchmark's
    references)."""
    compiled = kernels()  # raises naming the extra when numba is missing
    numba = import_optional("numba", purpose="the gold-thiolate alignment kernel")
    jit = numba.njit(cache=True, nogil=True)
    arccos_error = jit(_arccos_error_py)
    core = with_globals(
        _core_py,
        _rotation=compiled["rotation"],
        _rotations=jit(with_globals(_rotations_py if batched else _rotations_each_py,
                                    _rotation=compiled["rotation"], **compiled["qcp"])),
        _triangle=jit(_triangle_py),
        _triangle_error=jit(with_globals(_triangle_error_py, _arccos_error=arccos_error)),
        _triangle_error_cap=jit(_triangle_error_cap_py),
        _may_tie=jit(_may_tie_py),
        _nn=jit(_nn_outer_py if outer else _nn_accuracy_py),
        _nn_bound=jit(with_globals(_nn_bound_py, _rotation_bound=compiled["rotation_bound"])),
    )
    # numba's disk cache keys on the function, not on the globals it was handed: only
    # the package's own variant is cached
    return numba.njit(cache=batched and outer, nogil=True)(core)


def _triangle_py(a, b, out):  # pragma: no cover - compiled by numba
    """Sides |a|, |b|, |a − b| and the angles at the centre, at a and at b."""
    la = np.sqrt(a[0] ** 2 + a[1] ** 2 + a[2] ** 2)
    lb = np.sqrt(b[0] ** 2 + b[1] ** 2 + b[2] ** 2)
    lc = np.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2)
    out[0], out[1], out[2] = la, lb, lc
    out[3] = np.arccos(min(1.0, max(-1.0, (la * la + lb * lb - lc * lc) / (2 * la * lb))))
    out[4] = np.arccos(min(1.0, max(-1.0, (la * la + lc * lc - lb * lb) / (2 * la * lc))))
    out[5] = np.pi - out[3] - out[4]


# unit roundoff and the constants of the error bounds below (see _superpose)
_U = float(np.finfo(np.float64).eps) / 2


def _gamma(n):
    return n * _U / (1 - n * _U)


_G4, _G9, _G12 = _gamma(4), _gamma(9), _gamma(12)
_RES = np.sqrt(3.0) * _gamma(4)
#: the candidate list's capacity: every ordered pair of a core neighborhood's points
_MAX_PAIRS = (_MAX_POINTS - 1) * (_MAX_POINTS - 2)


def _arccos_error_py(c, dc):  # pragma: no cover - compiled by numba
    """Bound on |arccos ĉ − arccos c| for |ĉ − c| ≤ dc, plus acos's own rounding.

    arccos is 1/√(1 − c²)-Lipschitz away from ±1 and ½-Hölder up to them:
    |arccos a − arccos b| ≤ arccos(1 − |a − b|) ≤ π √(|a − b|/2); acos is
    within one ulp (≤ 2πu) of its value.
    """
    h = np.pi * np.sqrt(0.5 * dc)
    a = abs(c) + dc
    if a < 1.0:
        h = min(h, dc / np.sqrt(1.0 - a * a))
    return h + 2.0 * np.pi * _U


def _triangle_error_py(t):  # pragma: no cover - compiled by numba
    """‖e‖₂ of the rounding bounds e of the six entries :func:`_triangle_py` computes.

    Sides: a sum of three squares and a root (the differences a − b rounded
    relative to themselves), ≤ γ₄ l each. Cosines by the law of cosines from the
    computed sides: numerator ≤ γ₁₂ L (L = la² + lb² + lc²), denominator and
    quotient relative γ₁₁, so |ĉ − c| ≤ γ₁₂ (L / (2 la lb) + 1); through arccos by
    :func:`_arccos_error_py`. The third angle π − θ₀ − θ₁ adds both and two
    subtractions (≤ 2πu). Degenerate triangles (a zero side) get inf.
    """
    la, lb, lc = t[0], t[1], t[2]
    if not (la > 0.0 and lb > 0.0 and lc > 0.0):
        return np.inf
    big = la * la + lb * lb + lc * lc
    c0 = (la * la + lb * lb - lc * lc) / (2 * la * lb)
    c1 = (la * la + lc * lc - lb * lb) / (2 * la * lc)
    e0 = _arccos_error(c0, _G12 * (big / (2 * la * lb) + 1.0))
    e1 = _arccos_error(c1, _G12 * (big / (2 * la * lc) + 1.0))
    e2 = e0 + e1 + 2.0 * np.pi * _U
    return np.sqrt(_G4 * _G4 * big + e0 * e0 + e1 * e1 + e2 * e2)


def _triangle_error_cap_py(r_min, r_max):  # pragma: no cover - compiled by numba
    """An upper bound of :func:`_triangle_error_py` over triangles with sides from the centre
    in [r_min, r_max]: L ≤ 6 r_max², L/(2 la lb) ≤ 3 (r_max/r_min)², the angles by the
    ½-Hölder bound alone."""
    if not r_min > 0.0:
        return np.inf
    h = np.pi * np.sqrt(0.5 * _G12 * (3.0 * (r_max / r_min) ** 2 + 1.0)) + 2.0 * np.pi * _U
    e2 = 2.0 * h + 2.0 * np.pi * _U
    return np.sqrt(6.0 * _G4 * _G4 * r_max * r_max + 2.0 * h * h + e2 * e2)


def _may_tie_py(u_out, u_n, e):  # pragma: no cover - compiled by numba
    """Whether a pair left out of the list (u ≥ u_out, triangle error ≤ e) could tie with
    the last listed one (u_n, error ≤ e): u − u_n ≤ 2√u e + e² + γ₉u + 2√u_n e + e² + γ₉u_n,
    whose slack falls with u once √u ≥ e/(1 − γ₉)."""
    s = np.sqrt(u_out)
    if s * (1.0 - _G9) < e:
        return True
    return u_out * (1.0 - _G9) - 2.0 * s * e - 2.0 * e * e - (1.0 + _G9) * u_n \
        - 2.0 * np.sqrt(u_n) * e <= 0.0


def _nn_bound_py(x, y3, order, dp, n_big, x_max, g):  # pragma: no cover - compiled by numba
    """Bound on |ĝ − g| of the nearest-neighbour accuracy (2.26) at a QCP rotation (Å).

    The rotation of the three-point alignment of x[order] onto y3 (centres at the
    origin, QCP's p'(λ̂) = ``dp``) is within δR =
    :func:`~mlmlearn.oamlm._superpose.rotation_bound` of the exact one (conditioning
    κ = λ̄³/p'), which moves each rotated reference point by ≤ δR |x| ≤ δR x_max; computing a
    rotated point errs by ≤ √3 γ₄ |x|. Each of the n_big − 1 nearest-neighbour
    distances is 1-Lipschitz in the points, so their root-sum-square moves by
    ≤ √(n_big − 1)(δR + √3γ₄) x_max; the squares, their sum, the root and the
    division by n_big add a relative γ_{n_big + 6}.
    """
    k = n_big + 6
    rel = k * _U / (1 - k * _U)
    lam = 0.0
    for m in range(1, 3):
        for a in range(3):
            lam += x[order[m], a] ** 2 + y3[m, a] ** 2
    lam *= 0.5
    kappa = lam * lam * lam / dp if dp > 0.0 else np.inf
    dR = _rotation_bound(kappa, 2, 1e-12)  # the three-point alignment: two points summed
    return np.sqrt(n_big - 1.0) * (dR + _RES) * x_max / n_big + rel * g


def _nn_accuracy_py(x, nx, y, ny, R, rx, limit):  # pragma: no cover - compiled by numba
    """Eq. (2.26) over nearest-neighbour distances of the larger neighbour set, squared.

    Reference points x[1:nx] are rotated by R (into ``rx``, once); every
    neighbour of the larger set is matched to its nearest neighbour in the
    other set. Returns the summed squared distances, whose root over the
    larger count is the accuracy, or, as soon as the partial sum exceeds
    ``limit``, that partial sum (rounding is monotone, so the full sum is at
    least as large: a candidate abandoned so could not have won).
    """
    for p in range(1, nx):
        xp = x[p]
        for a in range(3):
            rx[p, a] = R[a, 0] * xp[0] + R[a, 1] * xp[1] + R[a, 2] * xp[2]
    total = 0.0
    big_is_x = nx >= ny
    n_big = nx if big_is_x else ny
    n_small = ny if big_is_x else nx
    for p in range(1, n_big):
        best = np.inf
        for q in range(1, n_small):
            xp = rx[p] if big_is_x else rx[q]
            yq = y[q] if big_is_x else y[p]
            d = 0.0
            for a in range(3):
                e = xp[a] - yq[a]
                d += e * e
            if d < best:
                best = d
        total += best
        if total > limit:
            return total
    return total


def _nn_outer_py(x, nx, y, ny, R, work, limit):  # pragma: no cover - compiled by numba
    """:func:`_nn_accuracy_py`, its stopping test on the outer points first: the same result.

    The least squared distances of the larger set's points (the reference's rotated by R
    into ``work`` (≥ (nx, 4)), by the same expression) are the plain loop's to the last
    bit: each e₀² + e₁² + e₂² left to right is its 0 + e₀² + e₁² + e₂² (the first sum
    exact), a − b and b − a square alike, and the least one is kept by the same
    comparison in the same order. They are found from the last row (the farthest
    neighbour) inwards, as the outer points tell a wrong candidate's rotation soonest, and
    kept in column 3; the sum over all of them is then taken in the plain loop's order
    (the same bits). While going, the partial sum ŝ_A of those found (any k ≤ m of the
    m = n_big − 1 ≤ 12 terms, each ≥ 0) is ≤ (1 + γ_{k−1}) S_A ≤ (1 + γ_{m−1}) S and the
    plain loop's full sum is ≥ (1 − γ_{m−1}) S (S the exact sums), so
    ℓ = fl(ŝ_A (1 − 64u)) ≤ ŝ_A (1 − 64u)(1 + u) is at most the full sum; once ℓ exceeds
    ``limit``, ℓ is returned: above ``limit`` and at most the full sum, all the core loop
    asks of a stopped candidate's value (it can not win, and a sum to compare with the
    tie limit). A candidate not stopped gets the full sum, which the plain loop returns
    too or, past ``limit``, a partial sum of; the core loop's decisions are the same.
    """
    r00, r01, r02 = R[0, 0], R[0, 1], R[0, 2]
    r10, r11, r12 = R[1, 0], R[1, 1], R[1, 2]
    r20, r21, r22 = R[2, 0], R[2, 1], R[2, 2]
    for p in range(1, nx):
        x0, x1, x2 = x[p, 0], x[p, 1], x[p, 2]
        work[p, 0] = r00 * x0 + r01 * x1 + r02 * x2
        work[p, 1] = r10 * x0 + r11 * x1 + r12 * x2
        work[p, 2] = r20 * x0 + r21 * x1 + r22 * x2
    shrink = 1.0 - 64.0 * _U
    partial = 0.0
    if nx >= ny:  # the reference's points matched to the input's
        for p in range(nx - 1, 0, -1):
            b0, b1, b2 = work[p, 0], work[p, 1], work[p, 2]
            best = np.inf
            for q in range(1, ny):
                e0 = b0 - y[q, 0]
                e1 = b1 - y[q, 1]
                e2 = b2 - y[q, 2]
                d = e0 * e0 + e1 * e1 + e2 * e2
                if d < best:
                    best = d
            work[p, 3] = best
            partial += best
            low = partial * shrink
            if low > limit:
                return low
        n_big = nx
    else:  # the input's points matched to the reference's
        for p in range(ny - 1, 0, -1):
            b0, b1, b2 = y[p, 0], y[p, 1], y[p, 2]
            best = np.inf
            for q in range(1, nx):
                e0 = work[q, 0] - b0
                e1 = work[q, 1] - b1
                e2 = work[q, 2] - b2
                d = e0 * e0 + e1 * e1 + e2 * e2
                if d < best:
                    best = d
            work[p, 3] = best
            partial += best
            low = partial * shrink
            if low > limit:
                return low
        n_big = ny
    total = 0.0
    for p in range(1, n_big):
        total += work[p, 3]
    return total


def _rotations_each_py(  # pragma: no cover - compiled by numba
    x, y, cand_p, cand_q, n_cand, tol, max_newton, R, dps, work, lam, state
):
    """:func:`_rotations_py` as one call of the single routine per candidate: the plain
    version, its oracle (the scratch arguments are unused)."""
    order = np.zeros(3, dtype=np.int64)
    for t in range(n_cand):
        order[1], order[2] = cand_p[t], cand_q[t]
        dps[t] = _rotation(x, y, order, 1, tol, max_newton, R[t])


def _rotations_py(  # pragma: no cover - compiled by numba
    x, y, cand_p, cand_q, n_cand, tol, max_newton, R, dps, work, lam, state
):
    """:func:`~mlmlearn.oamlm._superpose._rotation_py` of every candidate (0, p, q) at once.

    For each candidate t, the rotation of x[(0, cand_p[t], cand_q[t])] onto y, rows 0 left
    out (centres at the origin), written to ``R[t]`` with p'(λ̂) in ``dps[t]``: the same
    operations in the same order as a call of that routine per candidate, so the same
    bits, but the Newton iterations of all candidates run side by side — one's
    division does not wait for another's. ``work`` (≥ n_cand, 14), ``lam`` and
    ``state`` (≥ n_cand) are scratch.
    """
    for t in range(n_cand):
        sxx = sxy = sxz = syx = syy = syz = szx = szy = szz = 0.0
        g = 0.0
        for k in range(1, 3):
            r = cand_p[t] if k == 1 else cand_q[t]
            x0, x1, x2 = x[r, 0], x[r, 1], x[r, 2]
            y0, y1, y2 = y[k, 0], y[k, 1], y[k, 2]
            sxx += x0 * y0
            sxy += x0 * y1
            sxz += x0 * y2
            syx += x1 * y0
            syy += x1 * y1
            syz += x1 * y2
            szx += x2 * y0
            szy += x2 * y1
            szz += x2 * y2
            g += x0 * x0 + x1 * x1 + x2 * x2 + y0 * y0 + y1 * y1 + y2 * y2
        g *= 0.5
        n00, n11, n22, n33, n01, n02, n03, n12, n13, n23, c2, c1, c0 = _qcp_key(
            sxx, sxy, sxz, syx, syy, syz, szx, szy, szz)
        w = work[t]
        w[0], w[1], w[2], w[3] = n00, n11, n22, n33
        w[4], w[5], w[6], w[7], w[8], w[9] = n01, n02, n03, n12, n13, n23
        w[10], w[11], w[12], w[13] = c2, c1, c0, g
        lam[t] = g
        state[t] = 0  # 0 iterating, 1 converged, 2 stopped without converging
    # Newton's iterations, every candidate's in turn within each sweep
    for _ in range(max_newton):
        running = 0
        for t in range(n_cand):
            if state[t] != 0:
                continue
            c2, c1, c0 = work[t, 10], work[t, 11], work[t, 12]
            la = lam[t]
            lam2 = la * la
            p = (lam2 + c2) * lam2 + c1 * la + c0
            dp = 4.0 * lam2 * la + 2.0 * c2 * la + c1
            if dp == 0.0:
                state[t] = 2
                continue
            step = p / dp
            la -= step
            lam[t] = la
            if abs(step) <= tol * abs(la):
                state[t] = 1
            else:
                running += 1
        if running == 0:
            break
    for t in range(n_cand):
        w = work[t]
        n00, n11, n22, n33 = w[0], w[1], w[2], w[3]
        n01, n02, n03, n12, n13, n23 = w[4], w[5], w[6], w[7], w[8], w[9]
        c2, c1, g = w[10], w[11], w[13]
        la = lam[t]
        dp = (4.0 * la * la + 2.0 * c2) * la + c1 if state[t] == 1 else 0.0
        best, q0, q1, q2, q3 = _qcp_adjugate(n00, n11, n22, n33, n01, n02, n03, n12, n13, n23,
                                             la)
        if not best > 1e-20 * g**6:
            # a multiple largest eigenvalue: the single routine's SVD fallback, which
            # repeats the steps above to the bit and then takes the same branch
            order = np.zeros(3, dtype=np.int64)
            order[1], order[2] = cand_p[t], cand_q[t]
            dps[t] = _rotation(x, y, order, 1, tol, max_newton, R[t])
            continue
        _quaternion_rotation(q0, q1, q2, q3, best, R[t])
        dps[t] = dp


def _core_py(P, pc, ps, S, sc, ss, n_tri, R, g):  # pragma: no cover - compiled by numba
    """The core-gold rule for every (input, reference) pair.

    References in the outer loop: a reference's triangles (eq. 2.33) are
    computed once and compared with every input's. Rows 0
    (the centres) are at the origin, as :meth:`GoldThiolateAlignment.neighborhoods`
    builds them, so the rotations leave them out (their terms are exact zeros).

    Ties count alike, as in :func:`~mlmlearn.oamlm._superpose.best_alignments`:

    * the ``n_tri`` candidates of smallest u (2.33) are joined by every other
      pair whose u is within the two values' rounding bounds of the last one's
      (2√u‖e‖ + ‖e‖² + γ₉u each, ‖e‖ from :func:`_triangle_error_py`), so that a
      symmetric reference does not lose half of a set of equal triangles to
      rounding; the extra pairs follow the sorted list in loop order (a cheap
      bound, :func:`_may_tie_py`, skips the search when the least u left out is
      clearly above);
    * every candidate whose accuracy is within 2E_b (:func:`_nn_bound_py` of the
      best, b the first candidate of least accuracy) is a tie, and R is the mean
      of the tied candidates' rotations, in candidate order.

    A candidate's nearest-neighbour sum stops once a lower bound of it exceeds the
    best so far (it cannot win; :func:`_nn_outer_py`, outer points first); the few so
    stopped within reach of the final tie limit ((ĝ_b + 2E_b) n_big)² (1 + 64u) are
    summed again in full. Every g, and every R without a tie, is the plain loop's to
    the last bit.
    """
    ref_tri = np.empty((_MAX_POINTS, _MAX_POINTS, 6))
    u_all = np.empty((_MAX_POINTS, _MAX_POINTS))
    listed = np.zeros((_MAX_POINTS, _MAX_POINTS), dtype=np.bool_)
    rx = np.empty((_MAX_POINTS, 4))  # scratch of _nn
    order = np.zeros(3, dtype=np.int64)
    cand_u = np.empty(_MAX_PAIRS)
    cand_p = np.empty(_MAX_PAIRS, dtype=np.int64)
    cand_q = np.empty(_MAX_PAIRS, dtype=np.int64)
    R_try = np.empty((_MAX_PAIRS, 3, 3))  # each candidate's rotation, p'(λ̂), sum and limit
    dps = np.empty(_MAX_PAIRS)
    totals = np.empty(_MAX_PAIRS)
    limits = np.empty(_MAX_PAIRS)
    work = np.empty((_MAX_PAIRS, 14))  # scratch of _rotations
    lam = np.empty(_MAX_PAIRS)
    state = np.empty(_MAX_PAIRS, dtype=np.int64)
    n = P.shape[0]
    # each input's targets: (self, S, nearest Au) against a reference with S, else
    # (self, its two nearest Au) and their triangle
    y3_s = np.zeros((n, 3, 3))
    y3_au = np.zeros((n, 3, 3))
    tri0 = np.empty((n, 6))
    any_plain = False
    for i in range(n):
        a0 = 2 if ps[i] else 1
        for c in range(3):
            y3_s[i, 1, c], y3_s[i, 2, c] = P[i, 1, c], P[i, 2, c]
            y3_au[i, 1, c], y3_au[i, 2, c] = P[i, a0, c], P[i, a0 + 1, c]
        _triangle(y3_au[i, 1], y3_au[i, 2], tri0[i])
        if not ps[i]:
            any_plain = True
    for j in range(S.shape[0]):
        x = S[j]
        first = 2 if ss[j] else 1  # the reference's Au neighbours
        if any_plain or not ss[j]:
            for p in range(first, sc[j]):
                for q in range(first, sc[j]):
                    if p != q:
                        _triangle(x[p], x[q], ref_tri[p, q])
        x_max = 0.0
        x_min = np.inf
        for p in range(1, sc[j]):
            r = np.sqrt(x[p, 0] ** 2 + x[p, 1] ** 2 + x[p, 2] ** 2)
            x_max = max(x_max, r)
            if p >= first:
                x_min = min(x_min, r)
        e_cap = _triangle_error_cap(x_min, x_max)
        for i in range(n):
            y = P[i]
            n_big = max(sc[j], pc[i])
            n_cand = 0
            if ps[i] and ss[j]:
                # (self, S, nearest Au) against (self, S, each Au) of the reference
                y3 = y3_s[i]
                for m in range(2, sc[j]):
                    cand_p[n_cand], cand_q[n_cand] = 1, m
                    n_cand += 1
            else:
                y3 = y3_au[i]
                n_pairs = 0
                u_out = np.inf  # the least u of the pairs left out of the list
                for p in range(first, sc[j]):
                    for q in range(first, sc[j]):
                        if p == q:
                            continue
                        n_pairs += 1
                        u = 0.0  # eq. (2.33)
                        for t in range(6):
                            u += (ref_tri[p, q, t] - tri0[i, t]) ** 2
                        u_all[p, q] = u
                        if n_cand < n_tri:
                            pos = n_cand
                            n_cand += 1
                        elif u < cand_u[n_cand - 1]:
                            pos = n_cand - 1
                            u_out = min(u_out, cand_u[pos])
                        else:
                            u_out = min(u_out, u)
                            continue
                        while pos > 0 and cand_u[pos - 1] > u:  # keep the list sorted
                            cand_u[pos], cand_p[pos], cand_q[pos] = (
                                cand_u[pos - 1],
                                cand_p[pos - 1],
                                cand_q[pos - 1],
                            )
                            pos -= 1
                        cand_u[pos], cand_p[pos], cand_q[pos] = u, p, q
                if n_pairs > n_cand and _may_tie(u_out, cand_u[n_cand - 1], e_cap):
                    # pairs left out whose u ties with the last one's within rounding
                    n_list = n_cand
                    for t in range(n_list):
                        listed[cand_p[t], cand_q[t]] = True
                    u_n = cand_u[n_list - 1]
                    e_n = _triangle_error(ref_tri[cand_p[n_list - 1], cand_q[n_list - 1]])
                    bound_n = 2.0 * np.sqrt(u_n) * e_n + e_n * e_n + _G9 * u_n
                    for p in range(first, sc[j]):
                        for q in range(first, sc[j]):
                            if p == q or listed[p, q]:
                                continue
                            u, e = u_all[p, q], _triangle_error(ref_tri[p, q])
                            # u − u_n ≤ bound_n + 2√u e + e² + γ₉u, without the root
                            d = u - u_n - bound_n - e * e - _G9 * u
                            if d <= 0.0 or d * d <= 4.0 * u * e * e:
                                cand_u[n_cand], cand_p[n_cand], cand_q[n_cand] = u, p, q
                                n_cand += 1
                    for t in range(n_list):
                        listed[cand_p[t], cand_q[t]] = False
            # every candidate's rotation first, their Newton iterations side by side;
            # then each candidate's nearest-neighbour sum, which stops past the best so far
            _rotations(x, y3, cand_p, cand_q, n_cand, 1e-12, 50, R_try, dps, work, lam, state)
            g_best = np.inf
            total_best = np.inf
            b = 0
            for t in range(n_cand):
                limits[t] = total_best
                total = _nn(x, sc[j], y, pc[i], R_try[t], rx, total_best)
                totals[t] = total
                acc = np.sqrt(total) / n_big
                if acc < g_best:
                    g_best = acc
                    total_best = total
                    b = t
            g[i, j] = g_best
            # the candidates tied with the best within the accuracies' rounding, 2 E_b
            order[0], order[1], order[2] = 0, cand_p[b], cand_q[b]
            tau = 2.0 * _nn_bound(x, y3, order, dps[b], n_big, x_max, g_best)
            reach = ((g_best + tau) * n_big) ** 2 * (1.0 + 64.0 * _U)
            tied = 0
            for a in range(3):
                for c in range(3):
                    R[i, j, a, c] = 0.0
            for t in range(n_cand):
                if t != b:
                    total = totals[t]
                    if total > limits[t]:  # stopped early: a lower bound of the full sum
                        if not total <= reach:
                            continue
                        total = _nn(x, sc[j], y, pc[i], R_try[t], rx, np.inf)
                    if not np.sqrt(total) / n_big - g_best <= tau:
                        continue
                tied += 1
                for a in range(3):
                    for c in range(3):
                        R[i, j, a, c] += R_try[t, a, c]
            if tied == 1:
                for a in range(3):
                    for c in range(3):
                        R[i, j, a, c] = R_try[b, a, c]
            else:
                for a in range(3):
                    for c in range(3):
                        R[i, j, a, c] /= tied


# The core loop calls these names: in pure Python (the oracle) the routines above;
# _compile() hands the compiled loop the compiled ones instead.
_qcp_key = _qcp_key_py
_qcp_adjugate = _qcp_adjugate_py
_quaternion_rotation = _quaternion_rotation_py
_rotation = _rotation_py
_rotations = _rotations_py
_rotations_each = _rotations_each_py
_rotation_bound = _rotation_bound_py
_triangle = _triangle_py
_triangle_error = _triangle_error_py
_triangle_error_cap = _triangle_error_cap_py
_may_tie = _may_tie_py
_arccos_error = _arccos_error_py
_nn_accuracy = _nn_accuracy_py
_nn = _nn_outer_py
_nn_bound = _nn_bound_py
