"""mediamirror: mirror media from object storage into a browsable dataset catalog."""

__version__ = "0.1.0"
