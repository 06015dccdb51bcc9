"""APS: Automated Position Scaling."""

__version__ = "0.1.0"
