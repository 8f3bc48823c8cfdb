"""upreid.models."""
