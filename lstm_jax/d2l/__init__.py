"""The D2L reproduction: the book's rows as data, their runs, the verdicts, plots and the report, the
scratch-vs-library check and the PyTorch cross-check of the book's code."""
