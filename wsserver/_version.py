"""The one place the version lives (read by pyproject and `wsserver version`)."""

__version__ = "0.1.0"
