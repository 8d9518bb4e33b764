"""The pipeline stages behind the `sepsis.pipeline` façade: `prepare` (generate, extract,
prepare), `train` (the training units) and `evaluate` (evaluate, report and its context)."""
