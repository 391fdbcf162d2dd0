"""pxeforge: bare-metal provisioning in one Python process."""

__all__ = ["__version__"]

__version__ = "0.1.0"
