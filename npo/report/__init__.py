"""Reports: honesty tables, history over commits, plots, all from one tidy DataFrame."""
