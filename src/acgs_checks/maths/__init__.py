"""Pure arithmetic over measured numbers: the Prometheus text format and quantiles (``metrics``), the weekly
reviews' statistics (``trends``), and the Wednesday review's regressions, projections and plot (``review``)."""
