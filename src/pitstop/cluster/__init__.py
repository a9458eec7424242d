"""Scale-out on one machine: start the real engines (PostgreSQL, an S3 endpoint) a cluster needs."""
