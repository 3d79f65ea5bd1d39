"""Command-line interface: one module per command, each a thin shell over one library call."""
