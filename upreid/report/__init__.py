"""upreid.report."""
