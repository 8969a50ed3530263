"""dyncreds: short-lived AWS credentials for the programs on a machine."""

__version__ = "0.3.0.dev0"
