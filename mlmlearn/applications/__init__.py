"""Applications built on mlmlearn's models: TEM image comparison (``tem``); force fields,
structure optimization and Monte Carlo follow."""
