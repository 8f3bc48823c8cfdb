"""upreid.data."""
