"""stac2cube."""
