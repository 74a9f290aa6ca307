"""An immutable, image-based edge OS meta-distribution in the line of Kairos."""

__version__ = "0.1.0"
