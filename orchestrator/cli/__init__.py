"""The command line: thin, over services."""
