"""The live web dashboard of all runs (`supersmm dashboard`): tornado, with every asset shipped in the package."""
from .server import make_app, serve

__all__ = ["make_app", "serve"]
