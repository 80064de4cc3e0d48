"""anomon: anomaly detection for ML models in production and the machines they run on."""

__version__ = "0.1.0"
