"""Applications built on mlmlearn's models: TEM image comparison (``tem``), structure
optimization on ASE's BFGS with part-wise schedules and resumable runs (``optimize``), and
the hybrid optimizer that learns from reference calculations on the fly (``hybrid``),
active learning of a potential (``active_learning``) and Metropolis Monte Carlo
(``montecarlo``)."""
