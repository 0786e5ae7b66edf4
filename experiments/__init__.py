"""One module per figure / claim of the paper: ``python -m experiments.<name> --workdir=DIR``."""
