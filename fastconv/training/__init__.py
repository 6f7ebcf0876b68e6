"""Training machinery behind the public faces ``fastconv.models``, ``fastconv.solver``,
``fastconv.optim`` and ``fastconv.callbacks``: the models' layer types, the model protocol and
every loader (``model_state``), the tutorial models' adapter, checkpoints, MPI data
parallelism (``distributed``), preprocessing, learning-rate schedules, augmentation and
model summaries.

``fastconv.checkpoints``, ``fastconv.distributed``, ``fastconv.preprocessing``,
``fastconv.model_state``, ``fastconv.schedules``, ``fastconv.augment`` and
``fastconv.summary`` still import: they are these modules (``fastconv/__init__.py``,
``MOVED_MODULES``).
"""
