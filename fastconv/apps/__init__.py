"""The applications behind the ``fastconv`` command (``fastconv/__main__.py`` routes to
them): ``train_cli`` (train, evaluate, predict, summary) with its run folders
(``run_folder``), MPI ranks (``distributed_cli``) and shared options (``cli_args``);
``serve`` (the HTTP server), ``serve_model`` and ``predict`` behind it, and its page
(``web/``); ``plots`` and ``animation`` (a run's pictures); ``demo``; ``config``
(``fastconv config``, ``fastconv.show_config``); ``malloc`` (glibc tuning: an
application's choice, never a library's). The benchmark suite is ``fastconv.bench``.

``fastconv.train_cli``, ``fastconv.serve``, ``fastconv.plots``, ``fastconv.animation`` and
``fastconv.demo`` still import: they are these modules (``fastconv/__init__.py``,
``MOVED_MODULES``).
"""
