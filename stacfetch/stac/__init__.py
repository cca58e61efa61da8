"""STAC documents: scene facts of search results, and the manifest of written files."""
