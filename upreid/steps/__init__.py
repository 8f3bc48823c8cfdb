"""The pipeline's steps, one module each; ``upreid.pipeline`` holds what they share."""
