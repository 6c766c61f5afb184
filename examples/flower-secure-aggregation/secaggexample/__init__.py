"""secaggexample: a Flower app whose updates are aggregated by fedsecure."""
