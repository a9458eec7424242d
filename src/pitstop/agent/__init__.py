"""The device side: store-and-forward buffer, sources and edge scoring (``pitstop[agent]``).

Nothing here may import the server's dependencies (MLflow, Polars, Delta, FastAPI, SQLAlchemy,
LightGBM): a harvester's onboard computer installs only ``pitstop[agent]``.
"""
