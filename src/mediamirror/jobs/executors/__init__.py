"""Executors run jobs: ``local`` (embedded, in-process pool)."""
