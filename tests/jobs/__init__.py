"""Jobs: queue, executor, worker crashes, processors, post-processing commands."""
