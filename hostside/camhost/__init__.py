"""camhost: host-side tools for camagent cameras."""

__version__ = "0.1.0"
