"""The NNI 3.0 package (DESIGN §6), above ``nas`` in the layers of docs/architecture.md: NNI's NAS strategies
on our search spaces and NNI's hyper-parameter experiments over ``dcsnas`` trials.

- :mod:`~dcsnas.nni.config`, :mod:`~dcsnas.nni.summary`: the config schemas and the trials' summary (no NNI);
- :mod:`~dcsnas.nni.space`: a search-space file as an NNI ``ModelSpace``, its one-shot width mutation, and
  NNI's sample back to our option indices (so every search ends in the same ``arch.json``);
- :mod:`~dcsnas.nni.lightning`: the Lightning data module and module NNI trains with, driving the
  engine's own step pieces (:mod:`dcsnas.engine.steps`: losses, IB refresh, schedules);
- :mod:`~dcsnas.nni.supernet`: a trained DCS-DNAS supernet as the evaluator of NNI's multi-trial strategies;
- :mod:`~dcsnas.nni.strategies`: ``dcsnas search --strategy nni:*`` (random, regularized evolution,
  DARTS, GumbelDARTS);
- :mod:`~dcsnas.nni.tune`: ``dcsnas tune`` and its trial command ``python -m dcsnas.nni.tune trial ...``.

Only the last five import NNI and Lightning (through :mod:`~dcsnas.nni.deps`); importing this package does
not, so dcsnas works without NNI, and importing one of them without NNI raises a
:class:`~dcsnas.errors.ConfigError` with the install command.
"""
