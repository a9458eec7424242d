"""The device side: a store-and-forward buffer, sources, and edge scoring (``pitstop[agent]``).

Nothing here imports the server's libraries (MLflow, Polars, Delta, FastAPI, SQLAlchemy, LightGBM):
``pip install 'pitstop[agent]'`` is all a machine's small computer needs.
"""
