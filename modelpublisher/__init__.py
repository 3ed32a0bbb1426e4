"""Model publisher: health-checks, canaries and quality-gates a new model, then announces it."""
