"""Jobs: durable runs of a processor on one target, kept in the catalog.

The job row is the truth (state, attempts, progress, log tail). Executors only carry job
ids: ``local`` runs them in-process with a bounded pool; a Celery executor can run the same
:func:`mediamirror.jobs.runner.run_claimed` on many machines. Processors never know which.
"""
