"""What every benchmark shares, written once: :mod:`~benchmarks.common.runs` (run specs, zoo training runs, resumable
and in parallel, their results and the options that select them), :mod:`~benchmarks.common.report` (final returns,
comparisons, tables and figures), :mod:`~benchmarks.common.machine` (the machine, the checkout and the command of a
record) and :mod:`~benchmarks.common.random_play` (the random-play baseline)."""
