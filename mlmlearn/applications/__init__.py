"""Applications built on mlmlearn's models: TEM image comparison (``tem``) and structure
optimization on ASE's BFGS with part-wise schedules and resumable runs (``optimize``);
Monte Carlo follows."""
