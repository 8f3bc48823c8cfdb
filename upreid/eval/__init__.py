"""upreid.eval."""
