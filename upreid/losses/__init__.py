"""upreid.losses."""
