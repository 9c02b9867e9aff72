"""Module reward models: the `pipeline` command line and the stage recipes."""

__version__ = "0.1.0"
