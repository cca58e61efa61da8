"""STAC items and the run manifest: what stacfetch reads from and writes as STAC."""
