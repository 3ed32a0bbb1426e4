"""The `recommender` command: one subcommand per component."""
