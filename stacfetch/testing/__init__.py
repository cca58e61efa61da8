"""An offline Sentinel Hub emulator (token, Catalog, Process API) for tests and sandboxes."""
