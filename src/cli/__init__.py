"""The `icodrip` command line."""
