"""Feature collections: saved subsets of an extraction's features with their own split."""
