"""The daemon: the only package that imports APScheduler and joins the others."""

from anomon.service.daemon import build_scheduler, run

__all__ = ["build_scheduler", "run"]
